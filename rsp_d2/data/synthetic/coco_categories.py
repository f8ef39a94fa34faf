"""The category lists of COCO's instances and panoptic jsons, built from Detectron2's
``COCO_CATEGORIES`` (real ids, names, isthing) plus COCO's supercategories, which Detectron2
does not carry.
"""

__all__ = ["all_categories", "category_by_name", "instances_categories", "panoptic_categories"]

_THING_SUPER = {
    "person": range(1, 2),
    "vehicle": range(2, 10),
    "outdoor": range(10, 16),
    "animal": range(16, 26),
    "accessory": range(27, 34),
    "sports": range(34, 44),
    "kitchen": range(44, 52),
    "food": range(52, 62),
    "furniture": range(62, 71),
    "electronic": range(72, 78),
    "appliance": range(78, 83),
    "indoor": range(84, 91),
}
_STUFF_SUPER = {
    "textile": ("banner", "blanket", "curtain", "pillow", "towel", "rug-merged"),
    "building": ("bridge", "house", "roof", "tent", "building-other-merged"),
    "raw-material": ("cardboard", "paper-merged"),
    "furniture-stuff": ("counter", "door-stuff", "light", "mirror-stuff", "shelf", "stairs",
                        "cabinet-merged", "table-merged"),  # fmt: skip
    "floor": ("floor-wood", "floor-other-merged"),
    "plant": ("flower", "tree-merged", "grass-merged"),
    "food-stuff": ("fruit", "food-other-merged"),
    "ground": ("gravel", "platform", "playingfield", "railroad", "road", "sand", "snow",
               "pavement-merged", "dirt-merged"),  # fmt: skip
    "structural": ("net", "fence-merged"),
    "water": ("river", "sea", "water-other"),
    "wall": ("wall-brick", "wall-stone", "wall-tile", "wall-wood", "wall-other-merged"),
    "window": ("window-blind", "window-other"),
    "ceiling": ("ceiling-merged",),
    "sky": ("sky-other-merged",),
    "solid": ("mountain-merged", "rock-merged"),
}


def _supercategory(cat):
    if cat["isthing"]:
        table = {i: s for s, ids in _THING_SUPER.items() for i in ids}
        return table[cat["id"]]
    table = {n: s for s, names in _STUFF_SUPER.items() for n in names}
    return table[cat["name"]]


def all_categories():
    """Detectron2's ``COCO_CATEGORIES``: dicts with id, name, isthing and color."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return COCO_CATEGORIES


def panoptic_categories():
    """The 133 categories of ``panoptic_{split}2017.json`` (80 things, 53 stuff)."""
    return [
        {
            "supercategory": _supercategory(c),
            "isthing": c["isthing"],
            "id": c["id"],
            "name": c["name"],
        }
        for c in all_categories()
    ]


def instances_categories():
    """The 80 thing categories of ``instances_{split}2017.json``."""
    return [
        {"supercategory": c["supercategory"], "id": c["id"], "name": c["name"]}
        for c in panoptic_categories()
        if c["isthing"]
    ]


def category_by_name(name):
    """The ``COCO_CATEGORIES`` entry called ``name`` (KeyError naming it otherwise)."""
    for c in all_categories():
        if c["name"] == name:
            return c
    raise KeyError(f"{name!r} is not a COCO panoptic category name")
