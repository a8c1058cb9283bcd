"""Deliberately naive, slow ports of the official evaluation code, to test cnnbase.metrics against.

Each function follows its source line by line, with Python loops and lists, including its quirks (MATLAB's
stable sort, 0/0 = NaN and NaN-ignoring ``max``; MATLAB's ``0:0.1:1``; the C++ loop that skips junk;
revisitop's junk shift; the Holidays ``rank_shift``). Nothing here is vectorised or shared with the package,
so that a bug cannot hide in both. Sources (see PROTOCOLS.md section 6):

* VOC2007 devkit ``VOCcode/VOCevalcls.m`` (copy in ``npinto/VOCdevkit``);
* VOC2010-2012 devkit ``VOCcode/VOCap.m``;
* Oxford Buildings ``compute_ap.cpp`` (copy in ``oddconcepts/oxford-benchmark``);
* ``filipradenovic/revisitop`` ``python/evaluate.py`` (``compute_ap``, ``compute_map``);
* INRIA ``holidays_map.py`` (``eval_holidays.tgz``; Python 3 copy in ``lulmer/deep_image_retrieval``);
* ``jesolem/PCV`` ``PCV/imagesearch/imagesearch.py`` (``compute_ukbench_score``).
"""

from __future__ import annotations

import math

import numpy as np

NAN = float("nan")


# ---------------------------------------------------------------------------------------------- MATLAB bits


def matlab_colon(a: float, d: float, b: float) -> list[float]:
    """MATLAB's ``a:d:b`` for an exact integer number of steps.

    MathWorks technical solution 1-4FLI96 ("How does the COLON operator work?", with its COLONOP.m): the first
    half is a + k*d, the second half b - k*d, and for an even count the middle is (a+b)/2.
    """
    n = int(round((b - a) / d))
    out = [0.0] * (n + 1)
    for k in range(n // 2 + 1):
        out[k] = a + k * d
        out[n - k] = b - k * d
    if n % 2 == 0:
        out[n // 2] = (a + b) / 2
    return out


def matlab_max(values: list[float]) -> list[float]:
    """MATLAB's ``max`` of a vector: [] for an empty vector, NaNs ignored unless all are NaN."""
    if not values:
        return []
    finite = [v for v in values if not math.isnan(v)]
    return [max(finite)] if finite else [NAN]


def matlab_div(a: float, b: float) -> float:
    """MATLAB's double division: x/0 = ±Inf, 0/0 = NaN."""
    if b == 0:
        return NAN if a == 0 else math.copysign(math.inf, a)
    return a / b


def _voc_pr(scores: list[float], labels: list[int]) -> tuple[list[float], list[float]]:
    """The precision/recall part of VOCevalcls.m, difficult images (gt == 0) left in the ranking."""
    out = [float(s) for s in scores]
    gt = [int(g) for g in labels]
    # [so,si]=sort(-out);  MATLAB's sort is stable, as is Python's sorted
    si = sorted(range(len(out)), key=lambda i: -out[i])
    tp = [1 if gt[i] > 0 else 0 for i in si]
    fp = [1 if gt[i] < 0 else 0 for i in si]
    for i in range(1, len(si)):  # fp=cumsum(fp); tp=cumsum(tp);
        fp[i] += fp[i - 1]
        tp[i] += tp[i - 1]
    npos = sum(1 for g in gt if g > 0)
    rec = [matlab_div(t, npos) for t in tp]  # rec=tp/sum(gt>0);
    prec = [matlab_div(t, f + t) for t, f in zip(tp, fp, strict=True)]  # prec=tp./(fp+tp);
    return rec, prec


# ---------------------------------------------------------------------------------------------- VOC


def voc07_ap(scores: list[float], labels: list[int]) -> float:
    """VOCevalcls.m (VOC2007), 11-point AP, exactly; returns 0 (not NaN) when there is no positive."""
    rec, prec = _voc_pr(scores, labels)
    ap = 0.0
    for t in matlab_colon(0, 0.1, 1):  # for t=0:0.1:1
        p = matlab_max([p for r, p in zip(rec, prec, strict=True) if r >= t])  # p=max(prec(rec>=t));
        if not p:  # if isempty(p), p=0; end
            p = [0.0]
        ap = ap + p[0] / 11  # ap=ap+p/11;
    return ap


def voc_area_ap(scores: list[float], labels: list[int]) -> float:
    """VOCevalcls.m (VOC2010+) followed by VOCap.m, exactly; NaN when there is no positive."""
    rec, prec = _voc_pr(scores, labels)
    mrec = [0.0] + rec + [1.0]  # mrec=[0 ; rec ; 1];
    mpre = [0.0] + prec + [0.0]  # mpre=[0 ; prec ; 0];
    for i in range(len(mpre) - 2, -1, -1):  # for i=numel(mpre)-1:-1:1
        mpre[i] = matlab_max([mpre[i], mpre[i + 1]])[0]  # mpre(i)=max(mpre(i),mpre(i+1));
    idx = [i for i in range(1, len(mrec)) if not mrec[i] == mrec[i - 1]]  # find(mrec(2:end)~=mrec(1:end-1))+1
    ap = 0.0
    for i in idx:  # ap=sum((mrec(i)-mrec(i-1)).*mpre(i));
        ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap


# ---------------------------------------------------------------------------------------------- AUC


def roc_auc(scores: list[float], labels: list[int]) -> float:
    """All positive/negative pairs: 1 if the positive scores higher, 1/2 if tied (label 0 ignored)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y > 0]
    neg = [s for s, y in zip(scores, labels, strict=True) if y < 0]
    if not pos or not neg:
        return NAN
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


# ---------------------------------------------------------------------------------------------- Oxford


def oxford_compute_ap(pos: set[int], amb: set[int], ranked_list: list[int]) -> float:
    """compute_ap.cpp ``compute_ap`` (in float64, where the C++ uses float)."""
    old_recall = 0.0
    old_precision = 1.0
    ap = 0.0
    intersect_size = 0
    j = 0
    for i in range(len(ranked_list)):
        if ranked_list[i] in amb:
            continue
        if ranked_list[i] in pos:
            intersect_size += 1
        recall = intersect_size / float(len(pos))
        precision = intersect_size / (j + 1.0)
        ap += (recall - old_recall) * ((old_precision + precision) / 2.0)
        old_recall = recall
        old_precision = precision
        j += 1
    return ap


# ---------------------------------------------------------------------------------------------- revisitop


def revisitop_compute_ap(ranks: np.ndarray, nres: int) -> float:
    """revisitop python/evaluate.py ``compute_ap``."""
    nimgranks = len(ranks)
    ap = 0.0
    recall_step = 1.0 / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.0
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def revisitop_compute_map(
    ranks: np.ndarray, gnd: list[dict[str, np.ndarray]], kappas: list[int] | tuple[int, ...] = ()
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """revisitop python/evaluate.py ``compute_map``; ``ranks`` is (db_size, n_queries) as there.

    ``gnd[i]`` has ``'ok'`` and optionally ``'junk'``. ``np.in1d`` is spelled ``np.isin`` (same result).
    """
    map_ = 0.0
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = np.asarray(gnd[i]["ok"])
        if qgnd.shape[0] == 0:
            aps[i] = float("nan")
            prs[i, :] = float("nan")
            nempty += 1
            continue
        try:
            qgndj = np.asarray(gnd[i]["junk"])
        except KeyError:
            qgndj = np.empty(0)
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = revisitop_compute_ap(pos, len(qgnd))
        map_ = map_ + ap
        aps[i] = ap
        pos += 1
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    map_ = map_ / (nq - nempty)
    pr = pr / (nq - nempty)
    return map_, aps, pr, prs


def revisitop_protocol_gnd(gnd: list[dict[str, np.ndarray]], protocol: str) -> list[dict[str, np.ndarray]]:
    """The gnd_t of revisitop python/example_evaluate.py for 'easy', 'medium' or 'hard'."""
    out = []
    for g in gnd:
        if protocol == "easy":
            out.append({"ok": np.concatenate([g["easy"]]), "junk": np.concatenate([g["junk"], g["hard"]])})
        elif protocol == "medium":
            out.append({"ok": np.concatenate([g["easy"], g["hard"]]), "junk": np.concatenate([g["junk"]])})
        else:
            out.append({"ok": np.concatenate([g["hard"]]), "junk": np.concatenate([g["junk"], g["easy"]])})
    return out


# ---------------------------------------------------------------------------------------------- Holidays


def holidays_score_ap_from_ranks_1(ranks: list[int], nres: int) -> float:
    """holidays_map.py ``score_ap_from_ranks_1``."""
    ap = 0.0
    recall_step = 1.0 / nres
    for ntp, rank in enumerate(ranks):
        if rank == 0:
            precision_0 = 1.0
        else:
            precision_0 = ntp / float(rank)
        precision_1 = (ntp + 1) / float(rank + 1)
        ap += (precision_1 + precision_0) * recall_step / 2.0
    return ap


def holidays_map(ranks: np.ndarray, gnd: list[dict[str, object]]) -> float:
    """holidays_map.py main loop; query q's name is ``gnd[q]['self']``, result names are database indices."""
    sum_ap = 0.0
    n = 0
    for q, g in enumerate(gnd):
        query_name = int(g["self"])
        results = sorted(enumerate(int(x) for x in ranks[q]))  # (rank, name), sorted by increasing rank
        gt_results = {int(x) for x in g["positives"]}
        tp_ranks = []
        rank_shift = 0
        for rank, returned_name in results:
            if returned_name == query_name:
                rank_shift = -1
            elif returned_name in gt_results:
                tp_ranks.append(rank + rank_shift)
        sum_ap += holidays_score_ap_from_ranks_1(tp_ranks, len(gt_results))
        n += 1
    return sum_ap / n


# ---------------------------------------------------------------------------------------------- UKBench


def ukbench_score(ranks: np.ndarray) -> float:
    """PCV ``compute_ukbench_score``: query i is image i, groups of 4 consecutive images, top 4 counted."""
    nbr_images = ranks.shape[0]
    pos = np.zeros((nbr_images, 4))
    for i in range(nbr_images):
        pos[i] = [w for w in ranks[i][:4]]
    score = np.array([(pos[i] // 4) == (i // 4) for i in range(nbr_images)]) * 1.0
    return float(np.sum(score) / nbr_images)
