"""Multi-seed comparison of heads: the paper's protocol ("the median and standard deviation of
5 random runs", Table I caption) as a resumable job.

A comparison is variants (a config file plus KEY VALUE overrides each) x seeds. Every
(variant, seed) is one ``train_net.py`` run (:func:`rsp_d2.engine.run`, in a fresh interpreter
so that ``DETECTRON2_DATASETS`` and ``--num-gpus`` apply as on the command line) into
``ROOT/VARIANT/seedS``. A finished run (:func:`is_finished`) is skipped; an unfinished one is
resumed from its last checkpoint (``--resume``), so a killed comparison continues where it
stopped, and a comparison whose run records are kept in git (docs/runs/) continues on another
clone of the same CPU type (:func:`check_same_identity`). After training, the worker also scores the relation maps of the
trained model (:mod:`rsp_d2.analysis.relation_content`) into ``relation_content.json``.
"""
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..utils.errors import InputError, print_error
from ..utils.file_io import write_json_atomic
from ..utils.machine import cpu_model
from .compare_presets import PRESETS, PRETRAINED_R18

__all__ = ["Variant", "RunFailed", "parse_variant", "plan", "run_dir", "run_comparison",
           "is_finished", "run_identity", "check_same_identity", "PRESETS"]

# The folder holding the rsp_d2 package (a checkout's root, or site-packages).
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join("inference", "results.json")
FINAL_MODEL = "model_final.pth"
# What Detectron2's PeriodicCheckpointer names the checkpoint after an iteration.
_PERIODIC_CHECKPOINT = re.compile(r"model_\d{7}\.pth")
RUN_INFO = "run_info.json"
RELATION_CONTENT = "relation_content.json"


@dataclass
class Variant:
    """One head to compare: ``name`` (a folder name), its config file and overrides; ``paper``:
    the config (relative to configs/) of the paper's row it stands for, whose mIoU the report
    sets beside it (a miniature's full-size twin; None: no row)."""
    name: str
    config_file: str
    opts: List[str] = field(default_factory=list)
    paper: Optional[str] = None


class RunFailed(InputError):
    """A (variant, seed) run exited non-zero; the message names its log."""


def parse_variant(tokens: Sequence[str]) -> Variant:
    """``NAME CONFIG_FILE [KEY VALUE ...]`` (one ``--variant`` on the command line)."""
    tokens = list(tokens)
    if len(tokens) < 2 or len(tokens) % 2:
        raise InputError(f"--variant {' '.join(tokens)}: expected NAME CONFIG_FILE "
                         "[KEY VALUE ...]")
    return Variant(tokens[0], tokens[1], tokens[2:])


def _check_name(name: str) -> None:
    if not name or os.sep in name or name.startswith(".") or " " in name:
        raise InputError(f"variant name {name!r}: expected a plain folder name (no '/', ' ', "
                         "leading '.')")


def plan(variants: Sequence[Variant], seeds: Sequence[int], *,
         need_weights: bool = True) -> List[tuple]:
    """Check the variants (unique names, existing configs that merge with their overrides and,
    when runs are to train (`need_weights`), local MODEL.WEIGHTS that exist) and return the
    runs [(variant, seed)] in seed-major order, so that a comparison stopped early has every
    variant at the first seeds."""
    from ..config import load_config

    if not variants:
        raise InputError("no variants: give --preset or --variant")
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"seeds {list(seeds)}: expected distinct integers")
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"variant names {dup} appear twice")
    for v in variants:
        _check_name(v.name)
        weights = load_config(v.config_file, v.opts).MODEL.WEIGHTS  # InputError names the key
        if need_weights and weights and "://" not in weights and not os.path.isfile(weights):
            hint = (": the mini presets', made by python tools/pretrain_backbone.py "
                    "--output output/pretrain_R18 --data-root datasets/synthetic_pretrain"
                    if weights.endswith(PRETRAINED_R18) else
                    ": expected a checkpoint file (or a URL)")
            raise InputError(f"variant {v.name}: MODEL.WEIGHTS {weights} does not exist{hint}")
    return [(v, s) for s in seeds for v in variants]


def run_dir(root: str, variant: Variant, seed: int) -> str:
    return os.path.join(root, variant.name, f"seed{seed}")


def is_finished(out: str) -> bool:
    """A run counts only when training ended normally: ``train_net.py`` writes the final
    evaluation after ``model_final.pth``, and an interrupted run writes neither. The
    run_info.json written after a finished run counts as its weights: a run's record (the
    files docs/runs/.gitignore keeps) is finished without them, so that a comparison kept in
    git resumes on another clone."""
    if not os.path.isfile(os.path.join(out, RESULTS)):
        return False
    return any(os.path.isfile(os.path.join(out, p)) for p in (FINAL_MODEL, RUN_INFO))


def train_argv(variant: Variant, seed: int, out: str, num_gpus: int) -> List[str]:
    """The ``train_net.py`` arguments of one run (also recorded in its run_info.json);
    ``--resume`` when a killed earlier attempt left a checkpoint."""
    resume = ["--resume"] if os.path.isfile(os.path.join(out, "last_checkpoint")) else []
    return ["--config-file", variant.config_file, "--num-gpus", str(num_gpus), *resume,
            *variant.opts, "SEED", str(seed), "OUTPUT_DIR", out]


def run_one(variant: Variant, seed: int, out: str, *, num_gpus: int = 1,
            data_root: Optional[str] = None, relation_images: int = 4,
            threads: Optional[int] = None, log=print) -> Dict:
    """Train and evaluate one (variant, seed) unless finished; returns its run_info.
    `threads`: the run's intra-op threads (OMP_NUM_THREADS), else this process's setting."""
    info_path = os.path.join(out, RUN_INFO)
    if is_finished(out):
        log(f"[skip] {variant.name} seed {seed}: {os.path.join(out, RESULTS)} exists")
        _drop_resume_checkpoints(out)  # of a comparison killed before it could
        if (relation_images > 0 and not os.path.isfile(os.path.join(out, RELATION_CONTENT))
                and os.path.isfile(os.path.join(out, FINAL_MODEL))):
            _spawn(["--score-only", str(relation_images), *train_argv(variant, seed, out, 1)],
                   out, data_root, f"relation scores of {variant.name} seed {seed}", threads)
        if os.path.isfile(info_path):
            with open(info_path) as f:
                return json.load(f)
        return {"wall_s": None}
    os.makedirs(out, exist_ok=True)
    argv = train_argv(variant, seed, out, num_gpus)
    log(f"[run]  {variant.name} seed {seed} -> {out}", flush=True)
    identity = run_identity(variant)  # the weights it starts from, before it trains
    started, start = time.time(), time.perf_counter()
    _spawn(["--relation-images", str(relation_images), *argv], out, data_root,
           f"run {variant.name} seed {seed}", threads)
    wall = time.perf_counter() - start
    if not is_finished(out):
        raise RunFailed(f"run {variant.name} seed {seed} exited without {RESULTS}")
    info = {"variant": variant.name, "seed": seed, "config_file": variant.config_file,
            "opts": list(variant.opts), "num_gpus": num_gpus, "train_net_argv": argv,
            "wall_s": wall, "started": started, "ended": time.time(),
            "threads": threads or _threads(), "code": _code_version(), **identity}
    write_json_atomic(info_path, info, indent=2)
    _drop_resume_checkpoints(out)
    log(f"[done] {variant.name} seed {seed} in {wall:.0f}s", flush=True)
    return info


def _drop_resume_checkpoints(out: str) -> None:
    """Delete a finished run's periodic checkpoints (``model_0000199.pth``, ...): they only
    served to resume it if killed, and a comparison of many runs would otherwise fill the disk.
    ``model_final.pth`` stays (``last_checkpoint`` names it)."""
    for name in os.listdir(out):
        if _PERIODIC_CHECKPOINT.fullmatch(name):
            with contextlib.suppress(FileNotFoundError):  # another comparison of the folder did
                os.remove(os.path.join(out, name))


def _code_version() -> Dict:
    """rsp_d2's version and, in a git checkout, its commit: which code made a run (recorded,
    not checked: a later commit may change the floats, never the model)."""
    from .. import __version__

    commit = None
    if os.path.exists(os.path.join(_PACKAGE_ROOT, ".git")):  # a folder, or a file in a worktree
        try:
            proc = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"],
                                  cwd=_PACKAGE_ROOT, capture_output=True, text=True)
            commit = proc.stdout.strip() if proc.returncode == 0 else None
        except OSError:  # no git here: the version alone
            pass
    return {"rsp_d2": __version__, "commit": commit}


def _threads() -> int:
    """The intra-op threads a run gets: OMP_NUM_THREADS where set, else one per core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)


def _spawn(worker_argv: List[str], out: str, data_root: Optional[str], what: str,
           threads: Optional[int] = None) -> None:
    """Run the worker below in a fresh interpreter, output appended to OUT/compare_log.txt;
    `threads` sets its OMP_NUM_THREADS."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if data_root is not None:
        env["DETECTRON2_DATASETS"] = os.path.abspath(data_root)
    # the worker imports this package, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    log_path = os.path.join(out, "compare_log.txt")
    with open(log_path, "a") as f:
        proc = subprocess.run([sys.executable, "-m", __name__, *worker_argv],
                              stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RunFailed(f"{what} failed (exit {proc.returncode}): {_last_error(log_path)} "
                        f"(log: {log_path})")


def _last_error(log_path: str) -> str:
    with open(log_path, errors="replace") as f:
        lines = [l.strip() for l in f if l.strip()]
    errors = [l for l in lines if l.startswith("error:")]
    return (errors or lines or ["(empty log)"])[-1][:400]


def _weights_file(variant: Variant) -> Optional[str]:
    """The local checkpoint the variant starts from (MODEL.WEIGHTS of its config and
    overrides, as train_net.py reads it), if any; a URL is named by the config alone."""
    from ..config import load_config

    weights = load_config(variant.config_file, variant.opts).MODEL.WEIGHTS
    return weights if weights and os.path.isfile(weights) else None


def _setting(opts: Sequence[str]) -> List[str]:
    """The overrides without MODEL.WEIGHTS's value (a path of one machine; the weights are
    compared by their SHA-256)."""
    opts = list(opts)
    return [x for i, x in enumerate(opts)
            if not (i % 2 == 1 and opts[i - 1] == "MODEL.WEIGHTS")]


@functools.lru_cache(maxsize=8)
def _sha256(path: str, stamp: tuple) -> str:  # stamp: the file's (mtime_ns, size)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def run_identity(variant: Variant) -> Dict:
    """What a new run of `variant` here would record and must share with the runs it is paired
    with: the CPU (floats differ across CPU types) and the SHA-256 of the checkpoint it starts
    from (a pretrained backbone made again elsewhere is other weights)."""
    weights = _weights_file(variant)
    return {"cpu": cpu_model(),
            "weights_sha256": _sha256(weights, _stamp(weights)) if weights else None}


def check_same_identity(runs: Sequence[tuple], root: str, threads: Optional[int] = None) -> None:
    """Before a comparison adds runs to `root`: its finished runs must have been made on this
    CPU type, with the same overrides, from the same starting weights and with the same
    intra-op threads (`threads`, else this process's) as the runs it is about to train, or the
    paired differences would mix them (a record made before the weights' SHA-256 was recorded
    counts as other weights when the variant starts from a checkpoint). Raises InputError
    naming the first run that differs. A comparison with nothing left to train is a report of
    what is there and is not checked (its report refuses runs of two CPU types)."""
    if all(is_finished(run_dir(root, v, s)) for v, s in runs):
        return
    identities = {}  # per variant: its config merge and weights' hash once
    for v, s in runs:
        path = os.path.join(run_dir(root, v, s), RUN_INFO)
        if not (is_finished(run_dir(root, v, s)) and os.path.isfile(path)):
            continue
        with open(path) as f:
            recorded = json.load(f)
        if v.name not in identities:
            identities[v.name] = run_identity(v)
        here = {**identities[v.name], "threads": threads or _threads()}
        if here["weights_sha256"] is not None:
            recorded.setdefault("weights_sha256", None)
        if "opts" in recorded:
            recorded["opts"], here["opts"] = _setting(recorded["opts"]), _setting(v.opts)
        for key, value in here.items():
            if key in recorded and recorded[key] != value:
                raise InputError(
                    f"{path}: its run was made with {key} {recorded[key]!r}, a new run here "
                    f"would have {value!r}; runs that differ in it are not paired. Continue "
                    f"this comparison where its runs were made, or start another --output")


def run_comparison(variants: Sequence[Variant], seeds: Sequence[int], root: str, *,
                   num_gpus: int = 1, data_root: Optional[str] = None,
                   relation_images: int = 4, jobs: int = 1, log=print) -> Dict[tuple, Dict]:
    """Run every (variant, seed) not yet finished (after :func:`check_same_identity`);
    returns {(name, seed): run_info}.

    jobs: runs trained at once, in the plan's order. With more than one, each run gets an
    equal share of the cores as its intra-op threads (OMP_NUM_THREADS, unless set): on a CPU,
    runs side by side with fewer threads each finish more runs per hour than one run with all
    of them (docs/comparison_pilot.md, "Throughput"). A failed run stops the comparison once
    the runs under way have ended; finished runs are kept.
    """
    runs = plan(variants, seeds)
    threads = None
    if jobs > 1 and not os.environ.get("OMP_NUM_THREADS"):
        threads = max(1, (os.cpu_count() or 1) // jobs)
    check_same_identity(runs, root, threads)
    failed = threading.Event()

    def one(run):
        if failed.is_set():  # a run failed: start no other
            return None
        v, s = run
        try:
            return run_one(v, s, run_dir(root, v, s), num_gpus=num_gpus, data_root=data_root,
                           relation_images=relation_images, threads=threads, log=log)
        except BaseException:
            failed.set()
            raise

    if jobs <= 1:
        return {(v.name, s): one((v, s)) for v, s in runs}
    results = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(one, run): run for run in runs}
        try:
            for future in concurrent.futures.as_completed(futures):
                v, s = futures[future]
                results[(v.name, s)] = future.result()
        except BaseException:
            failed.set()  # the runs not started stay so; those under way finish
            raise
    return {(v.name, s): results[(v.name, s)] for v, s in runs}


def _score_relations(cfg, num_images: int) -> Dict:
    """Relation content per module of cfg's trained model, averaged over the first
    `num_images` images of its first test dataset; {} for a head without relations."""
    import numpy as np
    from detectron2.data import DatasetCatalog

    from ..engine import Predictor, read_image
    from ..layers import fusion_has_relation
    from ..visualization.trace import trace_head
    from ..visualization.relation_content import trace_relation_content

    if cfg.MODEL.SEM_SEG_HEAD.NAME != "RSPHead" or not any(
            fusion_has_relation(f) for f in cfg.MODEL.SEM_SEG_HEAD.RSP.FUSION):
        return {}
    predictor = Predictor(cfg)
    per_module: Dict[str, List[Dict]] = {}
    for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:num_images]:
        trace = trace_head(predictor, read_image(d["file_name"], format="BGR"))
        for name, score in trace_relation_content(trace).items():
            per_module.setdefault(name, []).append(score)
    return {name: {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
            | {"images": len(scores)} for name, scores in per_module.items()}


def _worker(argv: Sequence[str]) -> int:
    """``python -m rsp_d2.analysis.compare --relation-images N TRAIN_NET_ARGS``: what
    train_net.py does, then the relation scores of the final model (of N val images; none for
    N = 0). ``--score-only N``: the scores alone, of a finished run."""
    from ..config import load_config
    from ..engine import argument_parser, run

    mode, relation_images, argv = argv[0], int(argv[1]), list(argv[2:])
    args = argument_parser().parse_args(argv)
    try:
        if mode != "--score-only":
            run(args)
        cfg = load_config(args.config_file, args.opts or [])
        if relation_images > 0:
            cfg.defrost()
            cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
            scores = _score_relations(cfg, relation_images)
            write_json_atomic(os.path.join(cfg.OUTPUT_DIR, RELATION_CONTENT), scores, indent=2)
    except InputError as e:
        print_error(e, file=sys.stdout)  # into the run's log, which RunFailed quotes
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
