"""Find the Criteo files of a data folder, in time order (what ``experiments.criteo_dlrm --data-dir`` reads).

Terabyte: ``day_0`` .. ``day_23`` (plain or ``.gz``), ordered by day number -- not by name, where ``day_10``
would come before ``day_2``. Kaggle: ``train.txt`` (plain or ``.gz``). Nothing else in the folder counts
(TorchRec's preprocessing outputs such as ``day_0_dense.npy`` or ``day_fea_count.npz``, sub-folders).
"""
from __future__ import annotations

import errno
import os
import re
import warnings
from typing import Dict, List

from experiments.data.criteo_tsv import PathLike

DAY_FILE = re.compile(r"^day_(\d+)(\.gz)?$")
TRAIN_FILE = re.compile(r"^train\.txt(\.gz)?$")


def find_criteo_files(data_dir: PathLike) -> List[str]:
    """The Criteo files of a folder in time order: Terabyte ``day_<n>[.gz]`` sorted by day number, else Kaggle
    ``train.txt[.gz]``. Only those names count (``day_0_dense.npy`` and folders are not data). A day or
    ``train.txt`` present twice (plain and ``.gz``) is an error, since reading both would put the same lines in
    training and evaluation; when both layouts are there, the days are used, with a warning."""
    folder = os.path.expanduser(os.fspath(data_dir))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "Criteo data folder not found (give a folder holding day_<n>[.gz] "
                                              "or train.txt[.gz] files)", folder)
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
    days: Dict[int, List[str]] = {}
    for name in names:
        match = DAY_FILE.match(name)
        if match:
            days.setdefault(int(match.group(1)), []).append(name)
    trains = [n for n in names if TRAIN_FILE.match(n)]
    twice = [found for found in [*days.values(), trains] if len(found) > 1]
    if twice:
        raise ValueError(f"{folder}: {' and '.join(twice[0])} are the same file twice (plain and gzipped?); keep one "
                         "so that no line is read twice")
    if days:
        if trains:
            warnings.warn(f"{folder}: using the Terabyte files day_*; {trains[0]} is ignored", RuntimeWarning,
                          stacklevel=2)
        return [os.path.join(folder, days[d][0]) for d in sorted(days)]
    if trains:
        return [os.path.join(folder, trains[0])]
    raise FileNotFoundError(errno.ENOENT, "no Criteo files (day_<n>[.gz] or train.txt[.gz]) in folder", folder)
