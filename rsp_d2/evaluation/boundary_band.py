"""mIoU of the pixels near a ground-truth class boundary: where an effect of cross-scale context
should show first (the paper's Fig. 1: a pixel's class decided by what surrounds it).

A pixel is in the band when a pixel of another ground-truth label (the ignore label included)
lies within ``width`` pixels of it, in the max norm: ``dilate(gt) != erode(gt)`` with a
``(2 width + 1)`` square. The metrics are Detectron2's ``SemSegEvaluator``'s, computed from the
band's pixels only.
"""
import cv2
import numpy as np

from detectron2.evaluation import SemSegEvaluator

__all__ = ["BoundaryBandSemSegEvaluator", "boundary_band"]


def boundary_band(labels: np.ndarray, width: int) -> np.ndarray:
    """(H, W) bool: the pixels of the (H, W) integer label map `labels` (values < 256) with a
    pixel of another label within `width` pixels (max norm)."""
    if width < 1:
        raise ValueError(f"boundary band width {width}: expected >= 1 pixel")
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    as_bytes = labels.astype(np.uint8)
    # the image border is no boundary: replicate it
    grown = cv2.dilate(as_bytes, kernel, borderType=cv2.BORDER_REPLICATE)
    shrunk = cv2.erode(as_bytes, kernel, borderType=cv2.BORDER_REPLICATE)
    return grown != shrunk


class BoundaryBandSemSegEvaluator(SemSegEvaluator):
    """Detectron2's semantic metrics over the boundary band only, reported as
    ``{"sem_seg_band": {"mIoU", "IoU-<class>", ..., "width", "band_fraction"}}``.

    Args (beyond SemSegEvaluator's dataset_name and distributed):
        width: the band's half-width in pixels of the evaluated (original) image size.
    """

    def __init__(self, dataset_name, *, width: int, distributed: bool = True):
        if width < 1:
            raise ValueError(f"TEST.BOUNDARY_BAND {width}: expected >= 1 pixel, or 0 for off")
        # no output_dir: the predictions are the plain evaluator's to write
        super().__init__(dataset_name, distributed=distributed, output_dir=None)
        if self._num_classes >= 255:
            raise ValueError(f"{dataset_name}: the boundary band needs fewer than 255 classes")
        self._width = width
        self._compute_boundary_iou = False  # Detectron2's own B-IoU: not this measure
        self._band_pixels = 0
        self._valid_pixels = 0

    def reset(self):
        super().reset()
        self._band_pixels = self._valid_pixels = 0

    def process(self, inputs, outputs):
        k = self._num_classes
        for input, output in zip(inputs, outputs):
            pred = output["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy().astype(np.int64)
            gt = self.sem_seg_loading_fn(self.input_file_to_gt_file[input["file_name"]],
                                         dtype=int)
            gt[gt == self._ignore_label] = k
            band = boundary_band(gt, self._width)
            self._band_pixels += int((band & (gt != k)).sum())
            self._valid_pixels += int((gt != k).sum())
            # SemSegEvaluator's layout: [pred, gt], the extra last index for the ignore label
            self._conf_matrix += np.bincount((k + 1) * pred[band] + gt[band],
                                             minlength=self._conf_matrix.size
                                             ).reshape(self._conf_matrix.shape)

    def evaluate(self):
        if self._distributed:
            from detectron2.utils.comm import all_gather

            counts = all_gather((self._band_pixels, self._valid_pixels))
            self._band_pixels = sum(c[0] for c in counts)
            self._valid_pixels = sum(c[1] for c in counts)
        results = super().evaluate()  # gathers the band's confusion matrix
        if results is None:  # not the main process
            return results
        band = dict(results["sem_seg"], width=self._width,
                    band_fraction=self._band_pixels / max(self._valid_pixels, 1))
        return {"sem_seg_band": band}
