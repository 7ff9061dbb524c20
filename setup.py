"""coact-verl: CoAct (self-consistency + budgeted oracle labels) as a verl 0.9.1 plugin."""

from pathlib import Path

from setuptools import find_packages, setup

VERL_VERSION = "0.9.1"
VERL_REQUIREMENT = f"verl[verl-core]=={VERL_VERSION}"

INSTALL_REQUIRES = [
    VERL_REQUIREMENT,
    # verl 0.9.1 imports these without listing them in its base requirements.
    "cachetools",
    "uvicorn",
    "math-verify[antlr4_9_3]>=0.8.0",
    "fastapi>=0.110",
    "httpx>=0.27",
    "pyarrow",
    "pandas",
    "psutil",
    # Oracle service: pydantic models, and uvicorn's fast HTTP parser and event loop (it falls back without them).
    "pydantic>=2.5",
    "httptools>=0.6",
    "uvloop>=0.19; sys_platform != 'win32'",
    # ``coact-verl report``: training-curve figures (Agg backend, no display needed).
    "matplotlib>=3.8",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8",
        "pytest-asyncio>=0.23",
        "pytest-timeout>=2.3",
        "ruff>=0.6",
        "mypy>=1.10",
        "gguf>=0.10",
        # Oracle service: OpenAPI fuzzing, and the annotator page driven in Debian's chromium.
        "schemathesis>=4.0",
        "playwright>=1.40",
    ],
    # The stack verl 0.9.1 was tested with: its ``vllm`` extra pins vllm 0.24.0, torch 2.11.0 and transformers
    # 5.9.0, and its ``flash-attn-cu130torch211`` extra pins the flash-attn release built for that torch (2.8.3).
    "gpu": [f"verl[vllm,flash-attn-cu130torch211]=={VERL_VERSION}"],
}

setup(
    name="coact-verl",
    version="0.1.0",
    description="CoAct for verl: self-consistency labels, a budgeted oracle service, GRPO and DPO on FSDP.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["coact_verl", "coact_verl.*"]) + ["coact_verl.configs"],
    # The Hydra configs live at the top level (``--config-path configs``) and ship inside the
    # package as ``coact_verl.configs`` so an installed plugin can be launched from anywhere.
    package_dir={"coact_verl.configs": "configs"},
    package_data={"coact_verl.configs": ["*.yaml", "*/*.yaml"], "coact_verl": ["py.typed"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "verl.plugins": ["coact = coact_verl.plugin"],
        "console_scripts": ["coact-verl = coact_verl.cli:main"],
    },
)
