"""Tiny fake copies of each official benchmark layout, written under a temporary folder.

Each ``make_*`` builds the real on-disk layout with a handful of generated images and annotation files in the
official format, including the quirks of the real files (CRLF, no final newline, spaces in names, 1- vs 0-based
indices, empty Paris ``_good`` files, mixed-case CUB names, padded VOC labels), and returns what a correct
reader must find (a plain dict). Images are small random JPEGs of known sizes.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def jpeg(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """A random RGB JPEG of ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path, quality=85)
    return path


def write(path: Path, rows: list[str], *, crlf: bool = False, final_newline: bool = True) -> Path:
    """Write ``rows`` as text lines with the requested line-ending quirks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    eol = "\r\n" if crlf else "\n"
    text = eol.join(rows) + (eol if final_newline and rows else "")
    path.write_bytes(text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------------------- VOC


def make_voc(root: Path, *, year: int = 2007, crlf: bool = True, images: bool = True, xml: bool = True, test_labels: bool = True) -> dict:
    """``root/VOCdevkit/VOC<year>/...`` with train (3), val (2), trainval (5), test (3) and per-class files.

    Labels: image k is positive for class k % 20, difficult (0) for class (k + 1) % 20, negative otherwise.
    Label files pad 1 and 0 to width 2 (``000012  1``) and use CRLF when ``crlf``; one file has no final newline.
    """
    voc = root / "VOCdevkit" / f"VOC{year}"
    main = voc / "ImageSets" / "Main"
    ids = {"train": ["000005", "000007", "000009"], "val": ["000012", "000016"], "test": ["000001", "000002", "000003"]}
    ids["trainval"] = sorted(ids["train"] + ids["val"])
    all_ids = sorted({i for v in ids.values() for i in v})
    k_of = {i: k for k, i in enumerate(all_ids)}

    def label(i: str, c: int) -> int:
        k = k_of[i]
        return 1 if c == k % 20 else 0 if c == (k + 1) % 20 else -1

    for split in ("train", "val", "trainval", "test"):
        write(main / f"{split}.txt", ids[split], crlf=crlf, final_newline=split != "val")
        if split == "test" and not test_labels:
            continue
        for c, cls in enumerate(VOC_CLASSES):
            write(main / f"{cls}_{split}.txt", [f"{i} {label(i, c):2d}" for i in ids[split]], crlf=crlf, final_newline=cls != "dog")
    objects = {}
    for i in all_ids:
        k = k_of[i]
        w, h = 60 + k, 50
        if images:
            jpeg(voc / "JPEGImages" / f"{i}.jpg", (w, h), seed=k)
        objs = [(VOC_CLASSES[k % 20], (3, 4, 30, 40), 0, 1), (VOC_CLASSES[(k + 1) % 20], (10, 12, 20, 22), 1, 0)]
        objects[i] = objs
        if xml:
            body = "".join(
                f"<object><name>{n}</name><pose>Left</pose><truncated>{t}</truncated><difficult>{d}</difficult>"
                f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                for n, b, d, t in objs
            )
            (voc / "Annotations").mkdir(parents=True, exist_ok=True)
            (voc / "Annotations" / f"{i}.xml").write_text(
                f"<annotation><folder>VOC{year}</folder><filename>{i}.jpg</filename>"
                f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{body}</annotation>"
            )
    y = {s: np.array([[label(i, c) for c in range(20)] for i in ids[s]], dtype=np.int8) for s in ids}
    return {"root": root, "voc": voc, "ids": ids, "labels": y, "objects": objects}


# ------------------------------------------------------------------------------------------------ MIT-67


def make_mit67(root: Path, *, images: bool = True) -> dict:
    """``TrainImages.txt`` / ``TestImages.txt`` (paths with spaces, LF, no final newline) and ``Images/``."""
    train = ["airport_inside/airport inside 01.jpg", "gameroom/bt_1.jpg", "airport_inside/a2.jpg", "winecellar/bodega 12.jpg"]
    test = ["gameroom/game room.jpg", "winecellar/w 3.jpg"]
    write(root / "TrainImages.txt", train, final_newline=False)
    write(root / "TestImages.txt", test, final_newline=False)
    if images:
        for k, rel in enumerate(train + test):
            jpeg(root / "Images" / rel, seed=k)
    classes = ["airport_inside", "gameroom", "winecellar"]
    return {"root": root, "train": train, "test": test, "classes": classes}


# --------------------------------------------------------------------------------------------------- CUB


def make_cub(root: Path, *, images: bool = True) -> dict:
    """``root/CUB_200_2011/`` (as the tgz unpacks, with top-level attributes.txt) with 3 classes, 6 images.

    Ids in the files are not in line order everywhere; folder casing differs from file casing; one box
    reaches the image border so that the enlarged box must be clipped.
    """
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    imgs = {
        1: "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
        2: "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg",
        3: "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
        4: "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg",
        5: "003.Sooty_Albatross/Sooty_Albatross_0001_1071.jpg",
        6: "003.Sooty_Albatross/Sooty_Albatross_0002_796.jpg",
    }
    label = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}
    train = {1: 0, 2: 1, 3: 1, 4: 0, 5: 1, 6: 0}
    boxes = {1: (0.0, 0.0, 40.0, 30.0), 2: (10.0, 8.0, 20.0, 16.0), 3: (5.0, 5.0, 10.0, 10.0), 4: (2.0, 3.0, 44.0, 35.0), 5: (20.0, 10.0, 20.0, 20.0), 6: (1.5, 2.5, 30.0, 20.0)}
    sizes = {k: (48, 40) for k in imgs}
    write(base / "images.txt", [f"{k} {imgs[k]}" for k in imgs])
    write(base / "classes.txt", [f"{i + 1} {c}" for i, c in enumerate(classes)])
    write(base / "image_class_labels.txt", [f"{k} {label[k]}" for k in (2, 1, 3, 4, 6, 5)])
    write(base / "train_test_split.txt", [f"{k} {train[k]}" for k in imgs])
    write(base / "bounding_boxes.txt", [f"{k} {' '.join(f'{v:.1f}' for v in boxes[k])}" for k in imgs])
    write(root / "attributes.txt", ["1 has_bill_shape::curved_(up_or_down)", "2 has_bill_shape::dagger"])
    if images:
        for k, rel in imgs.items():
            jpeg(base / "images" / rel, sizes[k], seed=k)
    return {"root": root, "base": base, "images": imgs, "label": label, "train": train, "boxes": boxes, "sizes": sizes, "classes": classes}


# ----------------------------------------------------------------------------------------------- Flowers


def make_flowers(root: Path, *, images: bool = True) -> dict:
    """``imagelabels.mat`` (1 x 12 uint8, values 1..3) and ``setid.mat`` (1-based uint16 row vectors)."""
    import scipy.io

    labels = np.array([[1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]], dtype=np.uint8)
    trnid = np.array([[1, 2, 3]], dtype=np.uint16)
    valid = np.array([[4, 5, 6]], dtype=np.uint16)
    tstid = np.array([[7, 8, 9, 10, 11, 12]], dtype=np.uint16)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "imagelabels.mat", {"labels": labels})
    scipy.io.savemat(root / "setid.mat", {"trnid": trnid, "valid": valid, "tstid": tstid})
    if images:
        for i in range(1, 13):
            jpeg(root / "jpg" / f"image_{i:05d}.jpg", seed=i)
    return {"root": root, "labels": labels.ravel(), "trnid": trnid.ravel(), "valid": valid.ravel(), "tstid": tstid.ravel()}


# -------------------------------------------------------------------------------------------- attributes


ATTRS = ["2D Boxy", "3D Boxy", "Round", "Vert Cyl"]


def make_uiuc(root: Path, *, images: bool = True) -> dict:
    """``root/attribute_data/`` with 4 attribute names (spaces in names) and three object files.

    ``2008_000008.jpg`` has two objects (one line each); boxes are 1-based inclusive.
    """
    ad = root / "attribute_data"
    write(ad / "attribute_names.txt", ATTRS)
    write(ad / "class_names.txt", ["horse", "person", "bottle", "donkey", "mug"])
    write(ad / "README", ["The format of the files is as follows: <img_name> <image_class> <bbox> <attributes>"])
    train = [
        "2008_000008.jpg horse 54 87 71 99 0 1 1 0",
        "2008_000008.jpg person 1 1 20 30 1 0 0 0",
        "2008_000015.jpg bottle 10 11 30 35 0 0 0 1",
    ]
    test = ["2008_000002.jpg horse 2 3 40 30 1 1 0 0"]
    yahoo = ["donkey_1.jpg donkey 14 21 40 38 0 0 1 1", "donkey_1.jpg donkey 5 6 20 22 1 0 0 0", "mug_3.jpg mug 1 2 10 12 0 1 0 0"]
    write(ad / "apascal_train.txt", train)
    write(ad / "apascal_test.txt", test)
    write(ad / "ayahoo_test.txt", yahoo, final_newline=False)
    if images:
        for k, name in enumerate(["2008_000008.jpg", "2008_000015.jpg", "2008_000002.jpg"]):
            jpeg(root / "VOCdevkit" / "VOC2008" / "JPEGImages" / name, (80, 100), seed=k)
        for k, name in enumerate(["donkey_1.jpg", "mug_3.jpg"]):
            jpeg(root / "ayahoo_test_images" / name, (60, 50), seed=10 + k)
    return {"root": root, "train": train, "test": test, "yahoo": yahoo}


def make_people(root: Path, *, images: bool = True) -> dict:
    """The Berkeley people-attributes layout: ``{train,test}/labels.txt`` and ``{train,test}/NNNNN.jpg``.

    One test line has NaN bounds, as in the real file.
    """
    train = ["00001.jpg 10 12 20 30 1 -1 0 1 -1 1 -1 1 1", "00002.jpg 0 0 40 36 -1 1 -1 0 1 -1 1 -1 -1"]
    test = ["00001.jpg 5 5 10 10 1 1 1 1 1 1 1 1 1", "00002.jpg NaN NaN NaN NaN 0 0 0 0 0 0 0 0 0"]
    write(root / "train" / "labels.txt", train)
    write(root / "test" / "labels.txt", test)
    if images:
        for split in ("train", "test"):
            for k in (1, 2):
                jpeg(root / split / f"{k:05d}.jpg", (40, 36), seed=k)
    return {"root": root, "train": train, "test": test}


# ------------------------------------------------------------------------------------------- Oxford/Paris


def make_oxford(root: Path, *, images: bool = True) -> dict:
    """``root/gt_files_170407/`` (2 queries, ``oxc1_`` prefix, decimal and integer boxes) and ``root/jpg/``."""
    gt = root / "gt_files_170407"
    db = [f"all_souls_{i:06d}" for i in (13, 26, 91)] + [f"ashmolean_{i:06d}" for i in (7, 25)] + ["oxford_003410", "oxford_000001"]
    write(gt / "all_souls_1_query.txt", ["oxc1_all_souls_000013 136.5 34.1 648.5 955.7"])
    write(gt / "all_souls_1_good.txt", ["all_souls_000091", "all_souls_000013"])
    write(gt / "all_souls_1_ok.txt", ["all_souls_000026"])
    write(gt / "all_souls_1_junk.txt", ["oxford_003410"])
    write(gt / "ashmolean_1_query.txt", ["oxc1_ashmolean_000007 78 5 714 1000"], final_newline=False)
    write(gt / "ashmolean_1_good.txt", ["ashmolean_000025"])
    write(gt / "ashmolean_1_ok.txt", [])
    write(gt / "ashmolean_1_junk.txt", [])
    if images:
        for k, x in enumerate(db):
            jpeg(root / "jpg" / f"{x}.jpg", seed=k)
    return {"root": root, "gt": gt, "database": sorted(db)}


def make_paris(root: Path, *, images: bool = True) -> dict:
    """``root/paris_120310/`` (empty ``_good`` files, 6-decimal boxes, no prefix) and nested ``jpg/paris/<landmark>/``.

    One corrupt-listed file (``paris_louvre_000136``) sits in the image folder and must be left out.
    """
    gt = root / "paris_120310"
    write(gt / "defense_1_query.txt", ["paris_defense_000605 130.000000 17.000000 843.000000 732.000000"])
    write(gt / "defense_1_good.txt", [])
    write(gt / "defense_1_ok.txt", ["paris_defense_000050", "paris_defense_000605"])
    write(gt / "defense_1_junk.txt", ["paris_louvre_000001"])
    files = {"defense": ["paris_defense_000605", "paris_defense_000050"], "louvre": ["paris_louvre_000001", "paris_louvre_000136"]}
    if images:
        for lm, names in files.items():
            for k, x in enumerate(names):
                jpeg(root / "jpg" / "paris" / lm / f"{x}.jpg", seed=k)
    return {"root": root, "gt": gt, "database": sorted(["paris_defense_000605", "paris_defense_000050", "paris_louvre_000001"])}


def make_revisited(root: Path, name: str = "roxford5k", *, images: bool = True, gnd: dict | None = None) -> dict:
    """``root/gnd_<name>.pkl`` (protocol 3, plain lists, mixed int/float boxes) and ``root/jpg/``."""
    imlist = ["ashmolean_000283", "oxford_002124", "all_souls_000091", "oxford_000001", "bodleian_000003"]
    qimlist = ["all_souls_000013", "ashmolean_000007"]
    gnd = gnd or {
        "imlist": imlist,
        "qimlist": qimlist,
        "gnd": [
            {"bbx": [136.5, 34.1, 648.5, 955.7], "easy": [2], "hard": [0, 4], "junk": [1]},
            {"bbx": [78, 5, 714, 1000], "easy": [], "hard": [0], "junk": []},
        ],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / f"gnd_{name}.pkl").write_bytes(pickle.dumps(gnd, protocol=3))
    if images:
        for k, x in enumerate(imlist + qimlist):
            jpeg(root / "jpg" / f"{x}.jpg", seed=k)
    return {"root": root, **gnd}


# ---------------------------------------------------------------------------------------- Holidays, UKBench


def make_holidays(root: Path, *, images: bool = True, rotated: bool = True) -> dict:
    """``holidays_images.dat`` (no final newline) with 2 groups, and ``jpg/`` (+ ``jpg_rotated/``)."""
    names = ["100000.jpg", "100001.jpg", "100002.jpg", "100100.jpg", "100101.jpg"]
    write(root / "holidays_images.dat", names, final_newline=False)
    if images:
        for k, x in enumerate(names):
            jpeg(root / "jpg" / x, (40, 30), seed=k)
            if rotated:
                jpeg(root / "jpg_rotated" / x, (30, 40), seed=k)
    return {"root": root, "names": names}


def make_ukbench(root: Path, *, n: int = 8, images: bool = True) -> dict:
    """``root/full/ukbench%05d.jpg`` for ``n`` images (groups of 4)."""
    if images:
        for i in range(n):
            jpeg(root / "full" / f"ukbench{i:05d}.jpg", seed=i)
    else:
        root.mkdir(parents=True, exist_ok=True)
    return {"root": root, "n": n}
