"""Orchestra's git hook programs, imported as ``orchestra_hooks``: outside the backbone's namespace
(``orchestra``): post-receive renders the report by running expegit in a process of its own."""
