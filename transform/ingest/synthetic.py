"""Seeded, vectorised generator of a synthetic ad impression log with a planted funnel.

The log has the columns of :func:`columns` (the ``synthetic`` preset of
``schemas.config``) plus ground-truth columns
prefixed ``gt_`` (the adapters drop them; benchmarks use them to say which method recovers
the true probabilities). Everything is drawn from ``numpy.random.Generator`` streams seeded by
``seed`` (world and impressions; calibration sample), so ``generate(rows, seed,
num_actions)`` is a pure function of its arguments.

Planted world (fixed sizes, independent of ``rows``):

* Users (``NUM_USERS``): a segment ``user_segment`` (``NUM_SEGMENTS`` values), a latent
  taste vector (segment centroid + individual noise), an observed activity level
  ``user_activity`` (log-normal; active users are sampled more often and click a bit more)
  and a hidden purchase propensity.
* Items (``NUM_ITEMS``): a category ``category_id`` (``NUM_CATEGORIES``), a latent vector
  (category centroid + noise), an observed ``item_quality`` (standard normal), a ``price``
  (log-normal) and a hidden attractiveness. Every item belongs to one advertiser.
* Advertisers (``NUM_ADVERTISERS``) own ad tasks (``NUM_AD_TASKS``). Each ad task promotes
  one of its advertiser's items, has a base bid, and a target conversion action
  ``target_action`` in ``0..num_actions-1`` drawn from its advertiser's one or two
  objective actions. An advertiser *submits* (reports back) its objective actions plus each
  other action with probability ``EXTRA_SUBMIT_PROB``: labels of actions it does not submit
  are always 0 (the asymmetric labels KAML is about).
* Impressions: time uniform over ``DAYS`` days with a diurnal profile (``timestamp`` in
  integer seconds from ``EPOCH``, rows sorted by time, ``hour`` = UTC hour), a user
  (activity-weighted), an ad task (Zipf-like popularity), a ``device`` (4 values) and a
  per-impression ``ad_bid`` (task bid with noise).

Funnel:

* Genuine click: ``p_clean = sigmoid(b + 0.6 <u, v>/sqrt(d) + segment effect + category effect
  + 0.6 quality + 0.25 log activity + 0.15 log bid + device + hour + hidden item effect)``.
  The latent affinity is mostly carried by the observed segment x category pair and the main
  effects sit on observed features, so the signal is learnable (the default MMoE reaches a
  CTR AUC of 0.66 on 200k rows, 2 epochs; ``gt_ctr`` itself scores about 0.73).
* Noisy click (bot/accidental): ``p_noise = NOISE_BASE x device factor x hour factor``
  (device 3 and night hours 0-5 are much noisier; about 1 % of impressions overall).
  Observed ``click = genuine OR noise``. A click that is only noise (``gt_noise_click = 1``)
  NEVER converts.
* After a genuine click, action ``j`` happens with ``q_j = sigmoid(s_0 + c_j + l_j z + t_j)``,
  where ``z`` is a shared conversion score (quality, price, affinity, activity, hidden user
  propensity: this correlates the actions) and ``t_j`` an action-specific part (user taste
  towards the action, category x action effect). Base rates fall from action 0 to the last
  action (about 5x). Actions are drawn independently given these probabilities.
* The intercepts ``b`` and ``s_0`` are calibrated per world (bisection on a separate draw of
  ``CALIBRATION_ROWS`` impressions) so that the mean genuine CTR is ``GENUINE_CTR`` and the
  click-weighted mean P(target action | genuine click) is ``GENUINE_CVR`` for every seed.
* ``conv_j = happened_j AND advertiser submits j``; ``conversion = conv_<target_action>``
  (always submitted), so ``conversion`` and every ``conv_j`` imply ``click``.

Ground truth columns: ``gt_ctr`` (P(click), noise included), ``gt_ctr_clean`` (P(genuine
click)), ``gt_noise_click`` (0/1: this row's click is noise only), ``gt_cvr`` (P(target
conversion | click), diluted by noise clicks), ``gt_ctcvr`` (= ``gt_ctr * gt_cvr``),
``gt_cvr_<j>`` (P(action j happens | click), NOT masked by submission, so ``gt_cvr`` equals
``gt_cvr_<target_action>``), ``gt_submits_<j>`` (0/1: the advertiser submits action j) and
``gt_conv_<j>`` (0/1: action j happened, submitted or not: the labels an "oracle" advertiser
who submits everything would give, KAML Table 3).

Modes (``mode``; ``data.synthetic_mode`` in the config, ``funnelrank generate --mode``):

* ``default``: the world above (its data never changes with this option).
* ``hard``: a world where regularisation matters, made to resemble logs we did not make
  (planted like the outside Ali-CCP-format set of DESIGN.md's "Learning quality"): more and
  rarer ids (``HARD`` sizes: 20,000 users, 6,000 items, 6,000 ad tasks with a long tail),
  per-user and per-item biases on the click AND the conversion logit, a segment x category
  interaction table on each (the learnable cross), and a *bot segment* (segment 0) whose users
  click noisily (``HARD.bot_noise`` more noise-click probability) and, as every noise click,
  never convert. Those effects are drawn from their own random stream, after the default
  world's draws, and the intercepts are calibrated as in the default mode.
* ``clean``: the default world without noise clicks. Every random draw is the default mode's
  (the noise draw included), so for the same seed its rows are the default rows with the
  noise-only clicks unclicked: ``click = default click AND NOT gt_noise_click``, conversions
  and every feature identical. Made to test what noise clicks do to a method (PWiseR).

The string-id / missing-value variant (:func:`string_variant`; ``funnelrank generate
--string-ids --missing-rate R``) rewrites the ids as text (``user_id`` 123 -> ``"u_123"``,
each id column with its own prefix) and empties a share of the feature cells, the way logs
from outside arrive; it is meant for CSV files read with ``adapter: csv`` and declared
features (``dtype: auto``), see ``benchmarks/quality.py``.

Measured on 200k rows, 5 actions, seed 7 (seeds 1, 2, 3, 42 in brackets): CTR 5.2 %
(5.3 %), CVR given click 11.2 % (10.6-11.8 %), noise 19 % of clicks (18-19 %, 1.0 % of
impressions), 1,161 ``conversion`` positives (1,122-1,242); AUC of ``gt_ctr`` against clicks
0.73 (0.72-0.75), of ``gt_cvr`` against conversions among clicks 0.77 (0.76-0.81). 1M rows
take about 2-4 s to generate and about 6 s with :func:`write_csv`.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Dict

import numpy as np
import pandas as pd

from transform.ingest import csv_io

DEFAULT_NUM_ACTIONS = 5
GENERATED = "<generated>"  # the source name of rows generated in memory (data.path: null)
NUM_USERS = 4000
NUM_SEGMENTS = 8
NUM_ITEMS = 3000
NUM_CATEGORIES = 40
NUM_ADVERTISERS = 120
NUM_AD_TASKS = 1500
NUM_DEVICES = 4
LATENT_DIM = 8
DAYS = 14
EPOCH = 1_696_118_400  # 2023-10-01 00:00:00 UTC
EXTRA_SUBMIT_PROB = 0.3

GENUINE_CTR = 0.043  # mean P(genuine click); calibrated per world
GENUINE_CVR = 0.14  # click-weighted mean P(target action | genuine click); calibrated
CALIBRATION_ROWS = 40_000
NOISE_BASE = 0.0065
NOISE_DEVICE_FACTOR = (1.0, 0.8, 1.5, 4.0)
NOISE_NIGHT_FACTOR = 2.5  # hours 0..5
DEVICE_SHARE = (0.45, 0.35, 0.15, 0.05)
DEVICE_CTR_EFFECT = (0.25, 0.0, -0.3, -0.5)
CVR_RATE_FIRST, CVR_RATE_LAST = 0.22, 0.04  # shape of the base rates; level is calibrated


@dataclasses.dataclass(frozen=True)
class Mode:
    """Sizes of the world and the strength of the effects only some modes plant.

    Attributes:
      name: The mode's name.
      num_users, num_items, num_ad_tasks: Entity counts.
      task_zipf: Exponent of the ad tasks' Zipf-like popularity (larger: a longer tail).
      user_ctr, item_ctr: Std of the per-user / per-item bias on the genuine-click logit.
      segment_category_ctr: Std of the segment x category table on the click logit.
      user_cvr, item_cvr, segment_category_cvr: The same on the conversion logits (shared
        by every action).
      bot_segment: Segment whose users click noisily (-1: none).
      bot_noise: Extra noise-click probability of the bot segment's impressions.
      noise_scale: Factor on every noise-click probability (0: no noise clicks).
      extra_effects: Draw the biases and interaction tables above (only ``hard``).
    """

    name: str
    num_users: int = NUM_USERS
    num_items: int = NUM_ITEMS
    num_ad_tasks: int = NUM_AD_TASKS
    task_zipf: float = 0.8
    user_ctr: float = 0.0
    item_ctr: float = 0.0
    segment_category_ctr: float = 0.0
    user_cvr: float = 0.0
    item_cvr: float = 0.0
    segment_category_cvr: float = 0.0
    bot_segment: int = -1
    bot_noise: float = 0.0
    noise_scale: float = 1.0
    extra_effects: bool = False


DEFAULT = Mode("default")
HARD = Mode("hard", num_users=20_000, num_items=6_000, num_ad_tasks=6_000, task_zipf=1.0,
            user_ctr=0.6, item_ctr=0.6, segment_category_ctr=0.6, user_cvr=0.6, item_cvr=0.5,
            segment_category_cvr=0.6, bot_segment=0, bot_noise=0.05, extra_effects=True)
CLEAN = Mode("clean", noise_scale=0.0)
MODES = {m.name: m for m in (DEFAULT, HARD, CLEAN)}
STRING_PREFIXES = {"user_id": "u_", "item_id": "i_", "category_id": "c_",
                   "advertiser_id": "a_", "ad_task_id": "t_", "device": "d_", "hour": "h_",
                   "user_segment": "s_", "target_action": "act_"}


def spec(num_actions: int = DEFAULT_NUM_ACTIONS):
    """The ``DatasetSpec`` of the ``synthetic`` preset (funnel labels, KAML roles, int ids), as
    ``prepare`` completes it for generated rows (no optional features)."""
    from schemas import config as config_lib
    from schemas import features

    cfg = config_lib.from_dict({"data": {"num_actions": num_actions}})
    return features.spec_from_config(cfg.data, cfg.funnel)


def columns(num_actions: int = DEFAULT_NUM_ACTIONS):
    """The log's columns (ground truth excluded), in file order."""
    return (("click", "conversion") + tuple(f"conv_{j}" for j in range(num_actions))
            + ("user_id", "item_id", "category_id", "advertiser_id", "ad_task_id",
               "target_action", "device", "hour", "user_segment", "user_activity",
               "item_quality", "price", "ad_bid", "timestamp"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def ground_truth_columns(num_actions: int = DEFAULT_NUM_ACTIONS):
    """Names of the ``gt_`` columns :func:`generate` appends, in order."""
    return (("gt_ctr", "gt_ctr_clean", "gt_noise_click", "gt_cvr", "gt_ctcvr")
            + tuple(f"gt_cvr_{j}" for j in range(num_actions))
            + tuple(f"gt_submits_{j}" for j in range(num_actions))
            + tuple(f"gt_conv_{j}" for j in range(num_actions)))


def _world(rng: np.random.Generator, num_actions: int,
           mode: Mode = DEFAULT) -> Dict[str, np.ndarray]:
    """Users, items, advertisers and ad tasks (sizes fixed by ``mode``, independent of the row
    count)."""
    w: Dict[str, np.ndarray] = {}
    d = LATENT_DIM
    num_users, num_items, num_tasks = mode.num_users, mode.num_items, mode.num_ad_tasks
    seg_centroid = rng.normal(size=(NUM_SEGMENTS, d))
    cat_centroid = rng.normal(size=(NUM_CATEGORIES, d))

    w["user_segment"] = rng.integers(0, NUM_SEGMENTS, num_users)
    w["user_vec"] = seg_centroid[w["user_segment"]] + 0.5 * rng.normal(size=(num_users, d))
    w["user_activity"] = np.round(rng.lognormal(0.0, 0.7, num_users), 4)
    w["user_propensity"] = 0.4 * rng.normal(size=num_users)

    w["item_category"] = rng.integers(0, NUM_CATEGORIES, num_items)
    w["item_vec"] = cat_centroid[w["item_category"]] + 0.5 * rng.normal(size=(num_items, d))
    w["item_quality"] = np.round(rng.normal(size=num_items), 4)
    w["item_price"] = np.round(rng.lognormal(3.0, 0.8, num_items), 2)
    w["item_hidden"] = 0.3 * rng.normal(size=num_items)
    w["item_advertiser"] = rng.integers(0, NUM_ADVERTISERS, num_items)

    # Advertisers: one or two objective actions (skewed towards shallow actions), submitted
    # set = objectives plus random extra actions.
    action_pop = np.exp(-0.35 * np.arange(num_actions))
    action_pop /= action_pop.sum()
    objectives = np.zeros((NUM_ADVERTISERS, num_actions), dtype=bool)
    first = rng.choice(num_actions, NUM_ADVERTISERS, p=action_pop)
    second = rng.choice(num_actions, NUM_ADVERTISERS, p=action_pop)
    has_second = rng.random(NUM_ADVERTISERS) < 0.5
    objectives[np.arange(NUM_ADVERTISERS), first] = True
    objectives[np.arange(NUM_ADVERTISERS)[has_second], second[has_second]] = True
    w["objectives"] = objectives
    w["submits"] = objectives | (rng.random((NUM_ADVERTISERS, num_actions)) < EXTRA_SUBMIT_PROB)

    # Ad tasks: an advertiser (with items), one of its items, one of its objectives, a bid.
    owners = np.unique(w["item_advertiser"])
    task_adv = rng.choice(owners, num_tasks)
    order = np.argsort(w["item_advertiser"], kind="stable")
    starts = np.searchsorted(w["item_advertiser"][order], task_adv, side="left")
    counts = np.bincount(w["item_advertiser"], minlength=NUM_ADVERTISERS)[task_adv]
    w["task_item"] = order[starts + (rng.random(num_tasks) * counts).astype(np.int64)]
    w["task_advertiser"] = task_adv
    obj = objectives[task_adv].astype(np.float64)
    obj_cum = np.cumsum(obj / obj.sum(axis=1, keepdims=True), axis=1)
    w["task_target"] = np.minimum((obj_cum < rng.random((num_tasks, 1))).sum(axis=1),
                                  num_actions - 1)
    w["task_bid"] = rng.lognormal(0.0, 0.5, num_tasks)
    w["task_pop"] = 1.0 / np.arange(1, num_tasks + 1) ** mode.task_zipf
    w["task_pop"] = rng.permutation(w["task_pop"] / w["task_pop"].sum())

    # Effects.
    w["segment_ctr"] = 0.3 * rng.normal(size=NUM_SEGMENTS)
    w["category_ctr"] = 0.5 * rng.normal(size=NUM_CATEGORIES)
    w["hour_ctr"] = 0.3 * np.sin(2 * np.pi * (np.arange(24) - 14) / 24)
    w["action_intercept"] = np.array([
        _logit(np.exp(np.interp(j, [0, max(num_actions - 1, 1)],
                                np.log([CVR_RATE_FIRST, CVR_RATE_LAST]))))
        for j in range(num_actions)])
    w["action_loading"] = rng.uniform(0.6, 1.2, num_actions)
    w["action_taste"] = rng.normal(size=(num_actions, d))
    w["action_category"] = 0.3 * rng.normal(size=(num_actions, NUM_CATEGORIES))
    return w


def _mode_effects(w: Dict[str, np.ndarray], rng: np.random.Generator, mode: Mode) -> None:
    """The effects only ``mode`` plants (zero arrays in the default mode, which draws none)."""
    def normal(std, size):
        return std * rng.normal(size=size) if mode.extra_effects else np.zeros(size)

    w["user_ctr"] = normal(mode.user_ctr, mode.num_users)
    w["item_ctr"] = normal(mode.item_ctr, mode.num_items)
    w["segment_category_ctr"] = normal(mode.segment_category_ctr,
                                       (NUM_SEGMENTS, NUM_CATEGORIES))
    w["user_cvr"] = normal(mode.user_cvr, mode.num_users)
    w["item_cvr"] = normal(mode.item_cvr, mode.num_items)
    w["segment_category_cvr"] = normal(mode.segment_category_cvr,
                                       (NUM_SEGMENTS, NUM_CATEGORIES))


def _impressions(rng: np.random.Generator, w: Dict[str, np.ndarray],
                 n: int) -> Dict[str, np.ndarray]:
    """Draws ``n`` impressions (time-sorted) and looks up their entities' attributes."""
    # Time: day uniform, hour with a diurnal profile (evening peak), second uniform.
    hour_weight = 1.0 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 14) / 24)
    hour_weight /= hour_weight.sum()
    hour = rng.choice(24, n, p=hour_weight)
    ts = (EPOCH + rng.integers(0, DAYS, n) * 86_400 + hour * 3_600
          + rng.integers(0, 3_600, n))
    ts.sort()
    imp = {"timestamp": ts, "hour": (ts // 3_600) % 24}
    user_weight = w["user_activity"] / w["user_activity"].sum()
    imp["user"] = user = rng.choice(len(user_weight), n, p=user_weight)
    imp["task"] = task = rng.choice(len(w["task_pop"]), n, p=w["task_pop"])
    imp["device"] = rng.choice(NUM_DEVICES, n, p=DEVICE_SHARE)
    imp["bid"] = np.round(w["task_bid"][task] * rng.lognormal(0.0, 0.1, n), 4)
    imp["item"] = item = w["task_item"][task]
    imp["advertiser"] = w["task_advertiser"][task]
    imp["target"] = w["task_target"][task]
    imp["category"] = w["item_category"][item]
    imp["segment"] = w["user_segment"][user]
    imp["activity"] = w["user_activity"][user]
    imp["quality"] = w["item_quality"][item]
    imp["price"] = w["item_price"][item]
    imp["affinity"] = np.einsum("nd,nd->n", w["user_vec"][user], w["item_vec"][item]) / np.sqrt(
        LATENT_DIM)
    return imp


def _click_score(w: Dict[str, np.ndarray], imp: Dict[str, np.ndarray]) -> np.ndarray:
    """Genuine-click logit without its intercept."""
    return (0.6 * imp["affinity"] + w["segment_ctr"][imp["segment"]]
            + w["category_ctr"][imp["category"]] + 0.6 * imp["quality"]
            + 0.25 * np.log(imp["activity"]) + 0.15 * np.log(imp["bid"])
            + np.asarray(DEVICE_CTR_EFFECT)[imp["device"]] + w["hour_ctr"][imp["hour"]]
            + w["item_hidden"][imp["item"]] + w["user_ctr"][imp["user"]]
            + w["item_ctr"][imp["item"]]
            + w["segment_category_ctr"][imp["segment"], imp["category"]])


def _conversion_logits(w: Dict[str, np.ndarray], imp: Dict[str, np.ndarray]) -> np.ndarray:
    """``[n, num_actions]`` conversion logits after a genuine click, without the shift.

    A shared score (quality, price, affinity, activity, hidden user propensity) correlates
    the actions; user taste per action and a category x action effect make them differ.
    """
    shared = (0.5 * imp["quality"] - 0.45 * (np.log(imp["price"]) - 3.0)
              + 0.35 * imp["affinity"] + 0.2 * np.log(imp["activity"])
              + w["user_propensity"][imp["user"]] + w["user_cvr"][imp["user"]]
              + w["item_cvr"][imp["item"]]
              + w["segment_category_cvr"][imp["segment"], imp["category"]])
    taste = w["user_vec"][imp["user"]] @ w["action_taste"].T / np.sqrt(LATENT_DIM)
    return (w["action_intercept"][None, :] + w["action_loading"][None, :] * shared[:, None]
            + 0.3 * taste + w["action_category"].T[imp["category"]])


def _solve_shift(f, target: float, lo: float = -15.0, hi: float = 15.0) -> float:
    """Bisection for ``b`` with ``f(b) = target`` (``f`` increasing)."""
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _calibrate(w: Dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Sets ``ctr_intercept`` and ``cvr_shift`` so every world hits the planted rates.

    Uses ``CALIBRATION_ROWS`` impressions from a separate random stream: mean genuine CTR
    ``GENUINE_CTR`` and click-weighted mean P(target action | genuine click) ``GENUINE_CVR``.
    """
    imp = _impressions(rng, w, CALIBRATION_ROWS)
    score = _click_score(w, imp)
    w["ctr_intercept"] = _solve_shift(lambda b: _sigmoid(b + score).mean(), GENUINE_CTR)
    p_clean = _sigmoid(w["ctr_intercept"] + score)
    target_logit = _conversion_logits(w, imp)[np.arange(CALIBRATION_ROWS), imp["target"]]
    w["cvr_shift"] = _solve_shift(
        lambda b: np.average(_sigmoid(b + target_logit), weights=p_clean), GENUINE_CVR)


def generate(rows: int, seed: int = 7, num_actions: int = DEFAULT_NUM_ACTIONS,
             mode: str = "default") -> pd.DataFrame:
    """Draws ``rows`` impressions of the planted world.

    Args:
      rows: Number of impressions (rows), >= 1.
      seed: Seed of every random draw; equal arguments give an identical frame.
      num_actions: Conversion actions (``conv_0..conv_<num_actions-1>``), >= 1.
      mode: ``default``, ``hard`` or ``clean`` (see the module docstring).

    Returns:
      A frame with ``synthetic_spec(num_actions).columns`` (int64 ids/labels/timestamp,
      float64 dense features) followed by :func:`ground_truth_columns`, sorted by
      ``timestamp``.

    Raises:
      ValueError: ``rows`` or ``num_actions`` is < 1, or an unknown ``mode``.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows!r}")
    if num_actions < 1:
        raise ValueError(f"num_actions must be >= 1, got {num_actions!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    m = MODES[mode]
    rng = np.random.default_rng(seed)
    w = _world(rng, num_actions, m)
    _mode_effects(w, np.random.default_rng([seed, 2]), m)
    _calibrate(w, np.random.default_rng([seed, 1]))
    n = int(rows)
    imp = _impressions(rng, w, n)
    hour, device, target = imp["hour"], imp["device"], imp["target"]

    # Genuine click; noisy clicks (device- and hour-dependent) never convert.
    p_clean = _sigmoid(w["ctr_intercept"] + _click_score(w, imp))
    p_noise = (m.noise_scale * NOISE_BASE * np.asarray(NOISE_DEVICE_FACTOR)[device]
               * np.where(hour < 6, NOISE_NIGHT_FACTOR, 1.0))
    if m.bot_noise:
        p_noise = p_noise + m.bot_noise * (imp["segment"] == m.bot_segment)
    genuine = rng.random(n) < p_clean
    noise = rng.random(n) < p_noise
    click = genuine | noise
    p_click = 1.0 - (1.0 - p_clean) * (1.0 - p_noise)

    # Conversions after a genuine click.
    q = _sigmoid(w["cvr_shift"] + _conversion_logits(w, imp))  # P(action j | genuine click)
    happened = genuine[:, None] & (rng.random((n, num_actions)) < q)
    submits = w["submits"][imp["advertiser"]]  # [n, A]
    conv = happened & submits
    rows_idx = np.arange(n)
    conversion = conv[rows_idx, target]
    p_genuine_given_click = p_clean / p_click
    gt_cvr_actions = p_genuine_given_click[:, None] * q

    cols: Dict[str, np.ndarray] = {
        "click": click.astype(np.int64),
        "conversion": conversion.astype(np.int64),
    }
    for j in range(num_actions):
        cols[f"conv_{j}"] = conv[:, j].astype(np.int64)
    cols.update({
        "user_id": imp["user"].astype(np.int64),
        "item_id": imp["item"].astype(np.int64),
        "category_id": imp["category"].astype(np.int64),
        "advertiser_id": imp["advertiser"].astype(np.int64),
        "ad_task_id": imp["task"].astype(np.int64),
        "target_action": target.astype(np.int64),
        "device": device.astype(np.int64),
        "hour": hour.astype(np.int64),
        "user_segment": imp["segment"].astype(np.int64),
        "user_activity": imp["activity"].astype(np.float64),
        "item_quality": imp["quality"].astype(np.float64),
        "price": imp["price"].astype(np.float64),
        "ad_bid": imp["bid"].astype(np.float64),
        "timestamp": imp["timestamp"].astype(np.int64),
    })
    frame = pd.DataFrame({k: cols[k] for k in columns(num_actions)})
    frame["gt_ctr"] = p_click
    frame["gt_ctr_clean"] = p_clean
    frame["gt_noise_click"] = (noise & ~genuine).astype(np.int64)
    frame["gt_cvr"] = gt_cvr_actions[rows_idx, target]
    frame["gt_ctcvr"] = p_clean * q[rows_idx, target]
    for j in range(num_actions):
        frame[f"gt_cvr_{j}"] = gt_cvr_actions[:, j]
    for j in range(num_actions):
        frame[f"gt_submits_{j}"] = submits[:, j].astype(np.int64)
    for j in range(num_actions):
        frame[f"gt_conv_{j}"] = happened[:, j].astype(np.int64)
    return frame


# Columns the variant never empties: GAUC's user, KAML's target action and ADM's ad task.
KEEP_PRESENT = ("user_id", "target_action", "ad_task_id")
DENSE = ("user_activity", "item_quality", "price", "ad_bid")


def string_variant(frame: pd.DataFrame, string_ids: bool = True, missing_rate: float = 0.0,
                   seed: int = 0) -> pd.DataFrame:
    """The log as outside data arrives: ids as text and some feature cells empty.

    Args:
      frame: A frame of :func:`generate`.
      string_ids: Rewrite every id column of :data:`STRING_PREFIXES` as its prefix and the id
        (``user_id`` 123 -> ``"u_123"``).
      missing_rate: Share of the cells of every sparse and dense feature column, except
        :data:`KEEP_PRESENT`, that are emptied (each cell independently), in [0, 1).
      seed: Seed of the choice of emptied cells.

    Returns:
      A copy; id columns are text (``object``, missing ``None``) or nullable ``Int64``, dense
      columns float with ``NaN`` for missing. Labels, timestamps and ground truth are untouched.

    Raises:
      ValueError: ``missing_rate`` outside [0, 1).
    """
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate!r}")
    rng = np.random.default_rng([seed, 3])
    out = frame.copy()
    for column in list(STRING_PREFIXES) + list(DENSE):
        if column not in out.columns:
            continue
        empty = (rng.random(len(out)) < missing_rate) if column not in KEEP_PRESENT else None
        if column in DENSE:
            if empty is not None:
                out[column] = out[column].astype(np.float64).where(~empty)
            continue
        if string_ids:
            values = (STRING_PREFIXES[column] + out[column].astype(str)).astype(object)
        else:
            values = out[column].astype("Int64")
        if empty is not None:
            values = values.where(~empty, None if string_ids else pd.NA)
        out[column] = values
    return out


def write_csv(out_dir: str, rows: int, seed: int = 7, num_actions: int = DEFAULT_NUM_ACTIONS,
              mode: str = "default", string_ids: bool = False,
              missing_rate: float = 0.0) -> str:
    """Generates ``rows`` impressions and writes ``<out_dir>/impressions.csv``.

    Overwrites an existing file (written beside it, then renamed). Ground-truth probabilities
    are rounded to 8 decimals. Prints progress to stderr for outputs over 500k rows.

    Args:
      out_dir: Directory (created if missing).
      rows: Number of impressions.
      seed: Generator seed.
      num_actions: Conversion actions.
      mode: ``default`` or ``hard`` (module docstring).
      string_ids, missing_rate: Write :func:`string_variant` of the log (empty cells for the
        missing values); such a file is read with ``adapter: csv`` and declared features.

    Returns:
      The path of the written CSV (header line + ``rows`` lines, ground truth included).
    """
    t0 = time.perf_counter()
    frame = generate(rows, seed=seed, num_actions=num_actions, mode=mode)
    for name in ground_truth_columns(num_actions):
        if frame[name].dtype.kind == "f":
            frame[name] = frame[name].round(8)
    variant = string_ids or missing_rate > 0
    if variant:
        frame = string_variant(frame, string_ids, missing_rate, seed)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "impressions.csv")
    verbose = rows > 500_000
    if verbose:
        print(f"generated {rows} rows in {time.perf_counter() - t0:.1f}s; writing {path}",
              file=sys.stderr)
    if variant:  # text and empty cells: pandas' writer (Arrow's is for numeric frames)
        frame.to_csv(path + ".tmp", index=False)
        os.replace(path + ".tmp", path)
    else:
        csv_io.write_frame(frame, path)
    if verbose:
        print(f"wrote {rows} rows in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path
