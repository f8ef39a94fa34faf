#!/usr/bin/env python
r"""Draw what the RSP head does on one image (paper Fig. 1b, 4 and 5b).

    python tools/visualize_relations.py --config-file configs/synthetic/rsp4_R18.yaml \
        --checkpoint output/demo_rsp4_R18/model_final.pth --input IMAGE.png --output OUT_DIR \
        [--pixels 120,200 60,400 | --grid 2] [--background z|image] \
        [--baseline-config CFG --baseline-checkpoint CKPT] [--channel C] [--opts KEY VALUE ...]

Writes into OUT_DIR:
  relations.png      per pixel (row), the k x k relation weights of each RSP module over the
                     window of z = up(A_{l+1}) they cover (Fig. 1b);
                     (420 + 300 M) x (70 + 300 P) pixels for M modules, P pixels;
  query_key_pca.png  query f_q and key f_k of each module, PCA 1-3 as RGB (Fig. 4);
                     1200 x (90 + 230 M) pixels;
  propagation.png    one channel of Q_l, the RSE output and A_l per level, RSP head above the
                     sum baseline (Fig. 5b); (120 + 240 L) x (90 + 450 B) pixels for L levels,
                     B = 1 or 2 models.
"""
import argparse

from rsp_d2.visualization.head_figures import make_head_figures, parse_pixel
from rsp_d2.utils.errors import InputError, exit_with_error
from rsp_d2.visualization.relations import BACKGROUNDS


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="config of an RSP model")
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="its weights (.pth)")
    p.add_argument("--input", required=True, metavar="IMAGE", help="one image")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for the PNGs (created if missing)")
    p.add_argument("--pixels", nargs="+", default=[], metavar="Y,X",
                   help="pixels (row,column in the image) whose relations to draw")
    p.add_argument("--grid", type=int, default=2,
                   help="without --pixels: the centres of an N x N grid, N from 1 to 4 "
                        "(default 2)")
    p.add_argument("--background", choices=BACKGROUNDS, default="z",
                   help="under the weights: z's first principal component (default) or the image")
    p.add_argument("--channel", type=int, default=None,
                   help="channel of the propagation figure (default: the most varied one of "
                        "the finest A_l, per model)")
    p.add_argument("--baseline-config", default=None, metavar="FILE")
    p.add_argument("--baseline-checkpoint", default=None, metavar="FILE")
    p.add_argument("--max-colors", type=int, default=0,
                   help="quantize the PNGs to this many colours, 1 to 256 (smaller files); "
                        "0 = full RGB")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE config overrides, for both models")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    content = {}
    try:
        paths = make_head_figures(
            args.config_file, args.checkpoint, args.input, args.output,
            pixels=[parse_pixel(p) for p in args.pixels], grid=args.grid,
            background=args.background, channel=args.channel,
            baseline_config=args.baseline_config, baseline_checkpoint=args.baseline_checkpoint,
            opts=args.opts, max_colors=args.max_colors, content=content)
    except InputError as e:
        exit_with_error(e)
    for name, path in paths.items():
        print(f"{name}: {path}")
    for module, s in content.items():  # rsp_d2.visualization.relation_content
        print(f"{module}: content fraction {s['content_fraction']:.3f} (the image-mean pattern "
              f"explains {s['pattern_explained']:.1%} of the weight variance), "
              f"KL from it {s['kl']:.3f} nats over {s['pixels']} pixel-heads")


if __name__ == "__main__":
    main()
