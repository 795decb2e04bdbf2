"""Images and masks: reading, validation, folder-format data sets, splits, public sets and the phantom."""

from sampot_lib.data.folder import Dataset, FolderDataset
from sampot_lib.data.io import read_image, read_mask
from sampot_lib.data.phantom import make_phantom, write_phantom_set
from sampot_lib.data.pixels import preprocess, to_uint8
from sampot_lib.data.splits import load_splits, make_splits, save_splits
from sampot_lib.data.validate import Report, validate_folder

__all__ = [
    "Dataset",
    "FolderDataset",
    "Report",
    "load_splits",
    "make_phantom",
    "make_splits",
    "preprocess",
    "read_image",
    "read_mask",
    "save_splits",
    "to_uint8",
    "validate_folder",
    "write_phantom_set",
]
