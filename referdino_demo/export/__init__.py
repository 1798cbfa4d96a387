"""Exporting segmentation results: PNG mask zips (binary per expression, or DAVIS palette), COCO RLE JSON,
a per-frame CSV and the referred object cut out as RGBA PNGs. Every exporter takes the threshold (and multi-target
rule) at call time, works a chunk of frames at a time, writes atomically (never a half-written file) and returns the
path.
"""

from referdino_demo.export.cutout import export_cutout_zip
from referdino_demo.export.masks import DAVIS_PALETTE, export_palette_zip, export_png_zip, expression_folders
from referdino_demo.export.rle import decode_rle, encode_rle, export_coco_rle, mask_bbox
from referdino_demo.export.table import COLUMNS, export_csv

__all__ = [
    "COLUMNS",
    "DAVIS_PALETTE",
    "decode_rle",
    "encode_rle",
    "export_coco_rle",
    "export_csv",
    "export_cutout_zip",
    "export_palette_zip",
    "export_png_zip",
    "expression_folders",
    "mask_bbox",
]
