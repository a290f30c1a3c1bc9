"""Orchestra's git hook programs, imported as ``orchestra_hooks``: outside the backbone's namespace
(``orchestra``), because post-receive imports expegit to render the report."""
