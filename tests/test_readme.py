"""The README's drop-in snippet works as written on Detectron2's own Panoptic FPN config, the
relative links of the docs point to files that exist, and tools/README.md documents every tool."""
import os
import re

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _snippet(marker):
    text = open(os.path.join(REPO, "README.md")).read()
    m = re.search(re.escape(marker) + r"\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no python block after {marker}"
    return m.group(1)


def test_drop_in_snippet_builds_an_rsp_panoptic_fpn():
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    code = _snippet("<!-- drop-in -->")
    assert len([l for l in code.splitlines() if l.strip()]) == 3
    lines = code.splitlines()
    cfg = get_cfg()
    scope = {"cfg": cfg}
    exec("\n".join(lines[:2]), scope)
    # The user's own config, merged once the RSP keys exist:
    cfg.merge_from_file(model_zoo.get_config_file("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"))
    exec(lines[2], scope)
    cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE = "", "cpu"
    model = build_model(cfg).eval()
    assert type(model.sem_seg_head).__name__ == "RSPHead"
    assert [type(f).__name__ for f in model.sem_seg_head.fusions.values()] == [
        "SumFusion", "RelationalSemanticsPropagator", "RelationalSemanticsPropagator"]
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 200, 300) * 255}])[0]
    assert out["sem_seg"].shape == (54, 200, 300) and "panoptic_seg" in out


# Every page a user navigates: the README, CONTRIBUTING.md, docs/ and the tools' index.
def _doc_pages():
    docs = os.path.join(REPO, "docs")
    return (["README.md", "CONTRIBUTING.md", os.path.join("tools", "README.md")]
            + sorted(os.path.join("docs", n) for n in os.listdir(docs) if n.endswith(".md")))


def _link_targets(text):
    """Targets of the markdown links and images of ``text``, outside code and HTML comments."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)  # fenced blocks
    text = re.sub(r"(`+).*?\1", "", text, flags=re.S)                # inline code
    return re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)


def test_relative_links_and_images_of_the_docs_point_to_existing_files():
    broken = []
    for page in _doc_pages():
        path = os.path.join(REPO, page)
        assert os.path.isfile(path), f"{page} is missing"
        for target in _link_targets(open(path, encoding="utf-8").read()):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                continue  # http(s), mailto: and anchors within the page
            file = target.split("#", 1)[0]
            if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), file))):
                broken.append(f"{page}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_link_parser_sees_links_and_images_but_not_code():
    text = ("[a](x.md) ![b](img/y.png#z) [c](https://e.org) `[d](code.md)`\n"
            "```bash\n[e](block.md)\n```\n<!-- [f](comment.md) -->\n[g](../h.md \"title\")\n")
    assert _link_targets(text) == ["x.md", "img/y.png#z", "https://e.org", "../h.md"]


def test_tools_readme_documents_every_tool():
    """A new script in tools/ without an entry (a link to it) in tools/README.md fails here."""
    text = open(os.path.join(REPO, "tools", "README.md"), encoding="utf-8").read()
    linked = {t.split("#", 1)[0] for t in _link_targets(text)}
    tools = sorted(n for n in os.listdir(os.path.join(REPO, "tools"))
                   if os.path.isfile(os.path.join(REPO, "tools", n)) and n != "README.md"
                   and not n.startswith(".") and not n.endswith((".pyc", ".pyo")))
    assert tools and "analyze_head.py" in tools
    missing = [n for n in tools if n not in linked]
    assert not missing, f"tools/README.md has no entry linking to {missing}"
    for script in ("../train_net.py", "../demo/demo.py"):
        assert script in linked, f"tools/README.md has no entry for {script}"
