"""The quantisation ceiling of each heatmap codec: what the metrics give when the "prediction" is the training
target itself.

The ground-truth keypoints of the validation split are encoded to heatmaps by the codec (the targets a
candidate is trained towards, :mod:`.data`) and decoded back by it; the decoded keypoints are scored with the
search's own metrics (:func:`.metrics.keypoint_metrics`). A perfect network can do no better than this
through that codec. Decodings compared:

* ``argmax``: ``MSRAHeatmap``'s targets read at the arg-max cell alone (mmpose's ``get_heatmap_maximum``);
* ``msra``: ``MSRAHeatmap.decode`` (SimpleBaseline, Xiao et al., ECCV 2018: arg-max plus a quarter-cell step
  towards the higher neighbour, which is zero on the symmetric target, so the same as ``argmax`` here);
* ``dark``: ``MSRAHeatmap(unbiased=True)`` (DARK, Zhang et al., CVPR 2020);
* ``udp``: ``UDPHeatmap`` on UDP's crops (UDP, Huang et al., CVPR 2020).

With ``flip=True`` each row is also scored through the flip test the search and the export run
(:func:`.metrics.flip_back`): the targets of the mirrored crops flipped back (with the codec's
``shift_heatmap``, :func:`.data.flip_shift`), averaged with the unflipped targets, then decoded; what it
loses against the row without flip is the flip test's misalignment.

``python -m densenas.tasks.keypoints.ceiling`` prints the table for the default search's data
(``configs/search/keypoints_proxy.py``: the proxy keypoint set, 40 val persons, 128x96 crops); ``--root``,
``--input-size H W`` and ``--sigma`` change it.
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np
import torch

from .data import CODECS, KptData, KptSplit, build_codec, build_data, flip_shift, uses_udp
from .metrics import decode_heatmaps, flip_back, keypoint_metrics, to_image

DECODINGS = ("argmax", *CODECS)
SEARCH_DATA = dict(layout="proxy", root="data/proxy_kpt", input_size=(128, 96), sigma=2.0,
                   proxy=dict(num_train=64, num_val=24, size=160, seed=0))
"""The data section of ``configs/search/keypoints_proxy.py`` (the default keypoint search)."""


def crop_keypoints(split: KptSplit, input_size: tuple[int, int], udp: bool) -> np.ndarray:
    """The ground-truth keypoints of ``split`` in crop coordinates (``N x K x 2``), by the warp the crops were
    cut with (mmpose's ``get_warp_matrix``, or ``get_udp_warp_matrix`` for UDP)."""
    from mmpose.structures.bbox import get_udp_warp_matrix, get_warp_matrix

    warp = get_udp_warp_matrix if udp else get_warp_matrix
    out = np.zeros_like(split.keypoints, dtype=np.float64)
    for i, (c, s, kp) in enumerate(zip(split.centers, split.scales, split.keypoints)):
        mat = warp(np.asarray(c, np.float32), np.asarray(s, np.float32), 0.0, output_size=tuple(input_size))
        out[i] = kp @ mat[:, :2].T + mat[:, 2]
    return out


def mirrored_targets(split: KptSplit, data: KptData, codec: Any) -> np.ndarray:
    """The codec's targets of the mirrored crops (``N x K x h x w``): keypoints flipped as mmpose's
    ``flip_keypoints`` (``x -> w - 1 - x``, left and right swapped by the dataset's ``flip_indices``)."""
    from mmpose.structures.keypoint import flip_keypoints

    kin = crop_keypoints(split, data.input_size, uses_udp(data.codec))
    out = []
    for kp, vis in zip(kin, split.visible):
        fk, fv = flip_keypoints(kp[None].astype(np.float32), (vis > 0).astype(np.float32)[None],
                                image_size=tuple(data.input_size), flip_indices=data.flip_indices)
        out.append(codec.encode(fk, fv)["heatmaps"])
    return np.asarray(out, np.float32)


def decode_targets(data: KptData, codec: Any, decoding: str, flip: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints N x K x 2 in image coordinates, scores N x K)`` of the val split's targets decoded by
    ``decoding`` (``argmax``: the arg-max cell only), through the flip test when ``flip``."""
    from mmpose.codecs.utils import get_heatmap_maximum

    val = data.val
    heat = val.heatmaps.numpy()
    if flip:
        back = flip_back(torch.from_numpy(mirrored_targets(val, data, codec)), data.flip_indices,
                         flip_shift(data.codec)).numpy()
        heat = 0.5 * (heat + back)
    if decoding == "argmax":
        kps, scores = zip(*(get_heatmap_maximum(h.copy()) for h in heat))
        kps = np.asarray(kps, np.float64) * np.asarray(codec.scale_factor, np.float64)
        scores = np.asarray(scores, np.float64)
    else:
        kps, scores = decode_heatmaps(heat, codec)
    return to_image(kps, val.centers.astype(np.float64), val.scales.astype(np.float64), data.input_size), scores


def ceilings(data_cfg: dict[str, Any], decodings: Sequence[str] = DECODINGS, flip: bool = True,
             log=lambda m: None) -> list[dict[str, Any]]:
    """One row per decoding (and, with ``flip``, per flip setting): ``decoding``, ``flip``, the metrics of
    :func:`.metrics.keypoint_metrics` and ``err``, the mean distance to the truth over labelled keypoints in
    head sizes (box sizes when the data has none).

    Raises:
        ValueError: an unknown decoding (names it).
    """
    rows = []
    for decoding in decodings:
        if decoding not in DECODINGS:
            raise ValueError(f"decoding {decoding!r}: use one of {list(DECODINGS)}")
        codec_name = "msra" if decoding == "argmax" else decoding
        data = build_data(dict(data_cfg, codec=codec_name), log=log)
        codec = build_codec(data.input_size, data.sigma, codec_name)
        val = data.val
        norm = val.bbox_size if np.isnan(val.head_size).any() else val.head_size
        for flipped in ((False, True) if flip else (False,)):
            kps, scores = decode_targets(data, codec, decoding, flipped)
            m = keypoint_metrics(kps, scores, val, data.sigmas)
            dist = np.linalg.norm(kps - val.keypoints, axis=-1) / norm[:, None]
            rows.append(dict(decoding=decoding, flip=flipped, persons=len(val),
                             err=float(dist[val.visible > 0].mean()), **m))
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`ceilings`' rows."""
    lines = ["| decoding | flip test | PCKh@0.5 | PCKh@0.1 | AP | AR | mean error (head sizes) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['decoding']} | {'yes' if r['flip'] else 'no'} | {r['pckh05']:.3f} | {r['pckh01']:.3f} | "
                     f"{r['ap']:.3f} | {r['ar']:.3f} | {r['err']:.4f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Quantisation ceiling of the keypoint heatmap codecs: the val "
                                             "split's own targets decoded and scored (module docstring).")
    ap.add_argument("--root", default=SEARCH_DATA["root"], help="proxy keypoint set (built if missing)")
    ap.add_argument("--input-size", type=int, nargs=2, default=SEARCH_DATA["input_size"], metavar=("H", "W"))
    ap.add_argument("--sigma", type=float, default=SEARCH_DATA["sigma"])
    ap.add_argument("--no-flip", action="store_true", help="leave out the flip-test rows")
    args = ap.parse_args(argv)
    cfg = dict(SEARCH_DATA, root=args.root, input_size=tuple(args.input_size), sigma=args.sigma)
    rows = ceilings(cfg, flip=not args.no_flip)
    h, w = cfg["input_size"]
    print(f"{rows[0]['persons']} val persons of {args.root}, crops {h}x{w}, heatmaps {h // 4}x{w // 4}, "
          f"sigma {args.sigma}")
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
