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
        "orchestra.hooks": "hooks",
    },
    packages=[
        "orchestra", "orchestra.schemas", "orchestra.hooks",
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
        # SSH goes through paramiko directly (fabric's transport): see runaway/hosts.py for the
        # measurement that ruled out fabric's per-command Runner.
        "paramiko>=3.2",
        "ruamel.yaml>=0.18",
        "ruamel.yaml.clib>=0.2.8; platform_python_implementation=='CPython'",
        "jsonschema>=4.18",
        "numpy>=1.24",
        "scipy>=1.11",
        "tenacity>=8.3",  # stop_before_delay (runaway/backoff.py)
        "gevent>=23.9",
    ],
    extras_require={
        "test": ["pytest>=7.4", "selenium>=4.15"],
        "bench": ["optuna>=3.5"],
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
