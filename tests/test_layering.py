"""The package's layering: rsp_d2.layers is pure PyTorch, usable where Detectron2 is absent,
and its modules import each other without a cycle."""
import ast
import os
import subprocess
import sys
import textwrap

from support.tools import REPO

_WITHOUT_DETECTRON2 = textwrap.dedent("""
    import sys
    sys.modules["detectron2"] = None  # import detectron2 now raises ModuleNotFoundError
    import torch
    import rsp_d2
    from rsp_d2 import layers  # noqa: F401  (the from-import form works too)
    from rsp_d2.layers import RelationalSemanticsPropagator, available_rse_impls, rse_attention
    x = torch.randn(1, 8, 5, 6)
    q = torch.randn(1, 4, 5, 6)
    out = rse_attention(q, q, x, None, 3, impl="auto")
    assert out.shape == x.shape
    RelationalSemanticsPropagator(8, kernel_size=3)(x, x).sum().backward()
    assert not [m for m in sys.modules if m.startswith(("detectron2.", "fvcore"))]
    try:
        rsp_d2.add_rsp_config
    except ImportError as e:
        print("ImportError:", e)
    print("auto order:", available_rse_impls(q))
""")


def test_layers_import_and_run_without_detectron2():
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_DETECTRON2], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # The Detectron2 parts say what is missing instead of failing with an AttributeError.
    assert "ImportError: rsp_d2.add_rsp_config needs Detectron2" in proc.stdout
    assert "auto order: [" in proc.stdout and "'reference'" in proc.stdout


def test_rsp_d2_registers_everything_with_detectron2():
    from detectron2.modeling import BACKBONE_REGISTRY, SEM_SEG_HEADS_REGISTRY

    import rsp_d2

    assert "RSPHead" in SEM_SEG_HEADS_REGISTRY
    assert "build_resnet_fpn_p2p7_backbone" in BACKBONE_REGISTRY
    assert callable(rsp_d2.add_rsp_config) and callable(rsp_d2.load_config)


def _layers_imports():
    """{module: the rsp_d2.layers modules it imports} for every module of rsp_d2/layers."""
    folder = os.path.join(REPO, "rsp_d2", "layers")
    graph = {}
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".py") or file == "__init__.py":
            continue
        tree = ast.parse(open(os.path.join(folder, file)).read())
        graph[file[:-3]] = {
            (node.module or alias.name).split(".")[0]
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
            for alias in node.names}
    return graph


def test_layers_import_no_cycle():
    graph = _layers_imports()
    done, path = set(), []

    def visit(module):
        if module in path:
            cycle = path[path.index(module):] + [module]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if module in done:
            return
        path.append(module)
        for dep in graph.get(module, ()):
            visit(dep)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)
    # The self-check gets records: it needs the registry's type, not the dispatch.
    assert graph["rse_selfcheck"] == {"rse_registry"} and graph["rse_registry"] == set()
