"""Explainer adapters for fexbench; each registers through the `fexbench.explainers` entry point group."""
if __name__ != "fexbench.explainers":  # the folder was imported under its folder name (e.g. from the repository root)
    raise ImportError(f"{__name__!r} is the source folder of the `fexbench.explainers` package; install fexbench "
                      "(pip install -e .) and import fexbench.explainers")
