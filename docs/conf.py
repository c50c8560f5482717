# Sphinx configuration for gearsx (myst-nb + autosummary, cf. the scverse cookiecutter).
import os
import sys
from datetime import datetime
from importlib.metadata import metadata
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "extensions"))

info = metadata("gearsx")
project = info["Name"]
author = "gearsx developers"
copyright = f"{datetime.now():%Y}, {author}"
version = info["Version"]
release = version

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
    "sphinxcontrib.bibtex",
]

# Cross-links to anndata/scanpy/numpy/torch need their inventories from the internet. They are
# enabled on Read the Docs (or with GEARSX_DOCS_ONLINE=1). Both builds are nitpicky: every reference
# to gearsx itself must resolve. Offline (CI) the references into the packages below cannot, and only
# those are listed as known exceptions; online they resolve through intersphinx.
ONLINE = bool(os.environ.get("READTHEDOCS") or os.environ.get("GEARSX_DOCS_ONLINE"))
EXTERNAL = (
    "anndata", "numpy", "torch", "pandas", "scipy", "sklearn", "scanpy", "matplotlib", "typing",
    "collections", "pathlib", "tqdm", "logging", "lightning", "squidpy", "seaborn", "python", "distributed",
    "dask",
)  # fmt: skip
if ONLINE:
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "scipy": ("https://docs.scipy.org/doc/scipy/", None),
        "pandas": ("https://pandas.pydata.org/pandas-docs/stable/", None),
        "sklearn": ("https://scikit-learn.org/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "python": ("https://docs.python.org/3", None),
        "distributed": ("https://distributed.dask.org/en/stable/", None),
    }
nitpicky = True
if not ONLINE:
    nitpick_ignore_regex = [(r"py:.*", rf"{pkg}(\..*)?") for pkg in EXTERNAL]
    nitpick_ignore_regex += [(r"py:data", r"Ellipsis"), (r"py:class", r"Module")]  # torch's names in signatures

autosummary_generate = True
autodoc_member_order = "groupwise"
default_role = "literal"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
always_document_param_types = True
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"

myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath", "html_image"]
myst_heading_anchors = 3
nb_execution_mode = "off"
source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb", ".md": "myst-nb"}

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_title = project
html_theme_options = {"use_repository_button": False}
pygments_style = "default"
