"""Orchestra: experimental campaigns as git repositories, run anywhere.

``core/`` is installed under the import name ``orchestra`` (a package called ``core`` would clash with
other installed distributions), and ``schemas/`` ships inside it as ``orchestra.schemas``.
"""
from setuptools import setup

setup(
    name="orchestra-campaigns",
    version="0.1.0",
    description="Experimental campaigns as git repositories: run them locally, over SSH and on Slurm.",
    python_requires=">=3.10",
    package_dir={
        "orchestra": "core",
        "orchestra.schemas": "schemas",
        "orchestra_hooks": "hooks",
    },
    packages=[
        "orchestra", "orchestra.schemas", "orchestra_hooks",
        "expegit", "expegit.examples", "expegit.report",
        "runaway", "runaway.agent", "runaway.launchers", "runaway.providers", "runaway.transports", "parasearch",
    ],
    package_data={
        "orchestra.schemas": ["*.json"],
        "expegit.examples": ["*/*", "*/.gitignore"],
        "expegit.report": ["static/*"],
        "runaway": ["examples/*.yaml"],
    },
    install_requires=[
        "dulwich>=0.22",
        # SSH connections are fabric Connections (ProxyJump chains, its Config as the fallback ssh_config
        # reader) and invoke runs local commands (`ssh -G`); commands themselves go over raw paramiko
        # channels on the Connection's transport, which avoids the per-command Runner cost that once
        # ruled fabric out (runaway/hosts.py has the measurement). paramiko is imported directly too
        # (channels, host keys): >=3.2 for PKey.from_path and connect(transport_factory=...).
        "fabric>=3.2",
        "invoke>=2.0,<3",  # fabric 3.2 requires invoke<3; said here so a resolver never picks 3.x for us
        "paramiko>=3.2",
        "ruamel.yaml>=0.18",
        "ruamel.yaml.clib>=0.2.8; platform_python_implementation=='CPython'",
        "jsonschema>=4.18",
        "numpy>=1.24",
        "scipy>=1.11",
        "tenacity>=8.3",  # stop_before_delay (runaway/backoff.py)
        "argcomplete>=3.1",  # shell completion (bash, zsh) of subcommands, profiles and execution ids
        "gevent>=23.9",
    ],
    extras_require={
        # import-linter and mypy run as tests (tests/unit/test_static_checks.py); the stubs are what
        # mypy needs of the typed-elsewhere dependencies. invoke runs tasks.py. hypothesis: the loader's and
        # the quoting's property-based tests.
        "test": ["pytest>=7.4", "selenium>=4.15", "import-linter>=2.17", "mypy>=1.10", "types-jsonschema",
                 "types-gevent", "invoke>=2.2", "hypothesis>=6.100",
                 # the RO-Crate export is read back and checked by the rocrate library (roc-validator, the
                 # profile's own validator, pins rich<14, which import-linter's rich>=14.2 excludes)
                 "rocrate>=0.11", "pandas>=2.0", "optuna>=3.6"],
        # The notebook API's DataFrame (pandas) and the report's parameter importance (Optuna's PED-ANOVA).
        "analysis": ["pandas>=2.0", "optuna>=3.6"],
        "bench": ["optuna>=3.5", "hyperqueue>=0.27"],
    },
    entry_points={
        "console_scripts": [
            "expegit=expegit.cli:main",
            "git-expegit=expegit.cli:main",
            "runaway=runaway.cli:main",
            "parasearch=parasearch.cli:main",
        ],
    },
)
