"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/<script>.py``)."""

import hashlib
import os
import platform
import re
import threading
import time
from pathlib import Path

import numpy as np
import scanpy as sc

#: Real public data sets live next to the repository, never inside it.
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


#: Packages whose versions a results page records: the figures can move with them (the same code gave
#: another seed-2 row on the Tasic page after a fresh install, see ``results/tasic_seqfish.md``).
PACKAGES = (
    "numpy", "scipy", "pandas", "torch", "scikit-learn", "pynndescent", "anndata", "scanpy",
    "POT", "novosparc", "tangram-sc", "moscot",
)  # fmt: skip


#: Folder, beside the results pages, of the lists of installed packages that their environment lines name.
ENVIRONMENTS = "environments"


def installed_packages() -> str:
    """Return every distribution installed in this environment, one ``name==version`` per line, sorted.

    Names are normalised as pip compares them (lower case, runs of ``-``, ``_`` and ``.`` as one ``-``).
    The list holds what :data:`PACKAGES` leaves out: a new machine and install with the same versions of
    those gave other Tasic scores on 5 December (``results/tasic_seqfish.md``), and only a full list
    can show whether another library changed (:func:`machine` names the processor).
    """
    from importlib.metadata import distributions

    names = set()
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            names.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={dist.version}")
    return "\n".join(sorted(names)) + "\n"


def install_fingerprint(listing: str) -> str:
    """Return the first 12 hexadecimal digits of the SHA-256 of :func:`installed_packages`' list: equal lists, equal fingerprints."""
    return hashlib.sha256(listing.encode()).hexdigest()[:12]


def machine() -> str:
    """Return the processor's model, its usable cores and the instruction set torch's CPU kernels use.

    Those kernels are chosen by the instruction set (AVX2, AVX512, ...), and their rounding differs
    with it, so one training can end elsewhere on another machine with the same install.
    """
    model = platform.processor() or "unknown processor"
    try:
        with Path("/proc/cpuinfo").open() as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import torch

        kernels = f", torch kernels {torch.backends.cpu.get_cpu_capability()}"
    except ImportError:
        kernels = ""
    return f"{model} ({cores} cores{kernels})"


def environment(*, appendable: bool = False, listing: str | None = None) -> str:
    """One line naming the commit of the code, the versions of :data:`PACKAGES`, the whole install and the machine.

    The install is named by :func:`install_fingerprint` of ``listing`` (default: :func:`installed_packages`);
    :func:`write_results` keeps that list in ``environments/<fingerprint>.txt`` beside the page.
    ``appendable``: the script has ``--append`` (rows of earlier runs can be kept), which the line then says.
    """
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return ""
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # the code only: a run's own figures, written before its page, and earlier pages are not code
    if git("status", "--porcelain", "--", "../src", ".", ":(exclude)results"):
        commit += " with uncommitted changes"
    fingerprint = install_fingerprint(installed_packages() if listing is None else listing)
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return (
        f"Environment of the run that wrote this page: gearsx at {commit}, Python {platform.python_version()}, "
        + ", ".join(versions)
        + f"; install {fingerprint} (every package: `{ENVIRONMENTS}/{fingerprint}.txt` beside this page); "
        + f"CPU {machine()}."
        + (" Rows kept with `--append` come from the runs before it." if appendable else "")
    )


def write_results(path: Path, text: str, *, stamp: bool = True, appendable: bool = False) -> None:
    """Write a generated results page, keeping the hand-written sections of the page it replaces.

    The scripts generate a title, notes and tables, never a ``## `` heading; the readings written by
    hand under such headings (``## Reading``) follow them. When ``path`` exists, everything from its
    first ``## `` heading on is kept after the new ``text``, and a message says so: the kept reading
    describes the previous figures and must be revised to the new ones. ``stamp``: end the generated
    part with :func:`environment`'s line (``appendable``: the script has ``--append``, and the line says
    that kept rows come from earlier runs).
    """
    if stamp:
        listing = installed_packages()
        text = text.rstrip("\n") + "\n\n" + environment(appendable=appendable, listing=listing) + "\n"
        record = path.parent / ENVIRONMENTS / f"{install_fingerprint(listing)}.txt"
        if not record.exists():
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(listing)
    kept = ""
    if path.exists():
        old = path.read_text()
        match = re.search(r"^## ", old, flags=re.MULTILINE)
        if match:
            kept = old[match.start() :]
            heads = ", ".join(re.findall(r"^## .*$", kept, flags=re.MULTILINE))
            print(
                f"{path}: kept the hand-written sections of the previous page ({heads}); revise them to the new figures."
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n" + ("\n" + kept if kept else ""))


def mean_sd_markdown(table, by, columns, digits: int = 3) -> str:
    """A markdown table of ``mean ± SD`` of ``columns`` per group of ``by`` (groups in order of appearance).

    A group of one row has SD 0. ``digits``: decimals of both.
    """
    grouped = table.groupby(by, sort=False)[list(columns)]
    mean, sd = grouped.mean().round(digits), grouped.std().fillna(0.0).round(digits)
    return (mean.astype(str) + " ± " + sd.astype(str)).reset_index().to_markdown(index=False)


def dense_x(a) -> np.ndarray:
    """``a.X`` as a dense numpy array (sparse matrices densified)."""
    return a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)


def lognorm(a):
    """A normalised (``normalize_total``) and log1p-transformed copy of ``a``."""
    a = a.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    return a


def simulator_models(models: str | None, epochs: int = 12):
    """The default simulator's prepared ST slides, a trained encoder and a trained GEARS model.

    Trained here, or loaded from ``models`` when that folder holds them (saved there after training).
    """
    import gearsx as gx

    st, some_cells = gx.datasets.simulate_tissue(n_sc_cells=10, random_state=0)
    st, _ = gx.pp.prepare(st, some_cells, slide_key="slide", n_top_genes=2000)
    gx.pp.mean_center_per_slide(st, slide_key="slide")
    if models is not None and (Path(models) / "geo" / "meta.json").exists():
        enc = gx.model.SharedEncoder.load(Path(models) / "enc", adata=st)
        st.obsm["X_gears"] = enc.get_latent_representation(st)
        print(f"loaded the encoder and GEARS from {models}", flush=True)
        return st, enc, gx.model.GEARS.load(Path(models) / "geo", adata=st)
    enc = gx.tl.fit_encoder(st, slide_key="slide", progress=False)
    geo = gx.model.GEARS(st, slide_key="slide")
    t = time.perf_counter()
    geo.train(max_epochs=epochs, progress=False)
    print(f"GEARS training: {time.perf_counter() - t:.0f} s ({epochs} epochs x 32 batches)", flush=True)
    if models is not None:
        enc.save(Path(models) / "enc", overwrite=True)
        geo.save(Path(models) / "geo", overwrite=True)
    return st, enc, geo


def simulated_query(n: int, st, enc):
    """A simulated single-cell section of ``n`` cells (same tissue), normalised, centred and adapted."""
    import gearsx as gx

    t = time.perf_counter()
    _, cells = gx.datasets.simulate_tissue(n_sc_cells=n, random_state=0)
    cells = cells[:, st.var_names].copy()
    sc.pp.normalize_total(cells)
    sc.pp.log1p(cells)
    gx.pp.mean_center_per_slide(cells, slide_key=None)
    gx.tl.fit_adapter(cells, enc)
    print(f"{n:>9,} cells simulated and adapted in {time.perf_counter() - t:.0f} s", flush=True)
    return cells


def split_counts(a, seed: int):
    """Two independent measurements of the same cells, ``(first, second)``, each with about half the counts.

    Integer counts are thinned: each count goes to the first half with probability 1/2, the rest to
    the second (Poisson counts thin into two independent Poisson halves). Values that are not counts
    (MERFISH's, scaled by cell volume) get two independent Poisson draws of mean half the value. Cells
    left without a count in either half are dropped from that half; both keep ``obsm['spatial']``.
    """
    rng = np.random.default_rng(seed)
    x = dense_x(a).astype(np.float64)
    if np.allclose(x, np.rint(x)):
        counts = np.rint(x).astype(np.int64)
        first = rng.binomial(counts, 0.5)
        second = counts - first
    else:
        first, second = rng.poisson(x / 2), rng.poisson(x / 2)
    return with_counts(a, first), with_counts(a, second)


def with_counts(a, counts: np.ndarray):
    """A copy of ``a``'s cells with ``counts`` (dense, one row per cell) as ``X``; cells without a count dropped."""
    import scipy.sparse as sp

    keep = counts.sum(1) > 0
    out = a[keep].copy()
    out.X = sp.csr_matrix(counts[keep].astype(np.float32))
    return out


def band_split(xy, frac=0.6):
    """Boolean mask of the first ``frac`` of the points along the cloud's long (first principal) axis."""
    c = xy - xy.mean(0)
    proj = c @ np.linalg.svd(c, full_matrices=False)[2][0]
    return proj <= np.quantile(proj, frac)


class PeakRSS:
    """Peak resident memory of this process above its level at entry (GB), sampled in a thread.

    With ``children=True`` the memory of every descendant process counts too (the workers of a
    dask LocalCluster).
    """

    def __init__(self, *, children: bool = False):
        self.children = children

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.stop = False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> float:
        if self.children:
            import psutil

            proc = psutil.Process()
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # a worker that just exited
                    pass
            return total / 1024**3
        with Path("/proc/self/status").open() as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024**2
        return 0.0

    def _watch(self):
        while not self.stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.2)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.gb = self.peak - self.base


def add_append_option(parser) -> None:
    """The ``--append`` option of the scripts that write per-seed tables (see :func:`first_table`)."""
    parser.add_argument(
        "--append", action="store_true",
        help="keep the per-seed rows of the existing page that this run does not recompute (e.g. the peers' "
        "rows when only gearsx is rerun); the means are then taken over old and new rows together, the old "
        "ones at full precision from the .csv beside the page where it holds them, else at the page's three "
        "decimals",
    )  # fmt: skip


def first_table(path: Path) -> list[dict[str, str]]:
    """The rows of the first markdown table of a results page (the per-seed rows), as stripped strings.

    A table is a ``| ... |`` header followed by its ``|---|`` separator (a paragraph that merely
    starts with ``|``, such as ``|Spearman| between ...``, is not one). ``[]`` when the page does not
    exist. The scripts' ``--append`` keeps the rows of a previous run that the new run does not
    recompute (for example the peers' rows when only gearsx is rerun).
    """
    if not path.exists():
        return []
    lines = path.read_text().splitlines()

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    for i in range(len(lines) - 1):
        head, sep = lines[i].strip(), lines[i + 1].strip()
        if head.startswith("|") and head.endswith("|") and re.fullmatch(r"\|[\s:|-]+\|", sep):
            header, rows = cells(head), []
            for line in lines[i + 2 :]:
                if not line.startswith("|"):
                    break
                rows.append(dict(zip(header, cells(line), strict=True)))
            return rows
    return []


def precise_rows(page: Path, keys: list[str]) -> dict[tuple[str, ...], dict]:
    """The per-seed rows of the ``.csv`` kept beside a results page, at full precision, keyed by ``keys``.

    ``--append`` takes a kept row's numbers from here when the row is there: the page's table rounds
    them to three decimals, and means over rounded rows move in the fourth. ``{}`` without a ``.csv``
    (pages written before it was kept); the key values are compared as strings.
    """
    csv = page.with_suffix(".csv")
    if not csv.exists():
        return {}
    import pandas as pd

    table = pd.read_csv(csv, float_precision="round_trip")
    return {tuple(str(r[k]) for k in keys): r for r in table.to_dict("records")}


def write_precise_rows(page: Path, rows: list[dict], columns: list[str]) -> None:
    """Write the per-seed rows beside a results page (``.csv``, full precision) for :func:`precise_rows`."""
    import pandas as pd

    pd.DataFrame(rows).reindex(columns=columns).to_csv(page.with_suffix(".csv"), index=False, float_format="%.17g")


def as_number(text: str) -> float:
    """A table cell as a float (``nan`` for an empty cell, ``-`` or ``nan``)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")
