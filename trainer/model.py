"""Assembles the network from config: embeddings -> backbone -> towers -> sigmoid heads.

The network is a functional Keras model whose inputs are the transformed features
(``<key>_xf``), embedded and concatenated (and, with ``model.cross_layers``, crossed by DCN-v2
cross layers before the backbone) and whose outputs are a dict of probabilities keyed by head
name: one tower and head per task of ``model.tasks`` (``schemas.tasks``). With a funnel recipe:

* ``[ctr, cvr]``: heads ctr, cvr and ``ctcvr = ctr * cvr`` (ESMM eq. 1);
* ``[ctr, ctcvr]`` (funnel order, AITM): heads ctr, ctcvr and the derived
  ``cvr = ctcvr / ctr`` (clipped to [0, 1]);
* ``[ctr]``: a single-task CTR model (DNN, MaskNet);
* ``[ctr, cvr, <task>, ...]``: the ESMM heads plus one plain head per extra task (e.g. a
  ``view`` step between click and conversion, AdaFTR Sec. 3.3.4); only the ``adaftr`` loss
  recipe trains extra tasks.

Otherwise (``loss.name: bce``) every task is an independent head named after it.

With ``model.wide`` every task's logit is its deep logit plus a linear ("wide") logit over
the sparse ids, configured id crosses and dense features (``trainer.layers.wide.WideLogits``,
Wide & Deep eq. 1); ``model.deep_exclude`` and ``model.deep_max_vocabulary`` leave features to
the wide part alone (:func:`deep_features`).

Everything the inference path needs is in it, nothing training-only (losses and their
weights live in ``trainer.funnel_model.FunnelModel``). Loss recipes that read intermediate
values (AdaFTR, KAML) train a second functional model over the SAME layers
(:func:`build_networks` with ``aux``) whose outputs add ``"_reps"`` (each task's backbone
output), ``"_hidden"`` (each task tower's layer activations) or ``"_logits"``; with KAML's HKE
it also holds the extended sub-towers and their extra input. The inference network stays as it
is and is what gets exported.

``[ctr, actions]`` (KAML) gives heads ctr and ``cvr_<j>`` for every conversion action; a
sample's pCVR is the head of its target action (the serving signatures select it).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import tensorflow as tf

from schemas import features
from schemas import tasks as tasks_lib
from schemas.config import ConfigError, ModelConfig
from trainer.layers.aitm import AITM
from trainer.layers.autoheri import AutoHERI
from trainer.layers.cross_stitch import CrossStitch
from trainer.layers.dcn import DCN, CrossNetwork
from trainer.layers.embedding import FeatureEmbedding
from trainer.layers.heads import ProductHead, RatioHead
from trainer.layers.hke import HKE
from trainer.layers.man import MAN
from trainer.layers.mlp import MLP
from trainer.layers.mmoe import MMoE
from trainer.layers.omoe import OMoE
from trainer.layers.ple import CGC, PLE
from trainer.layers.shared_bottom import SharedBottom
from trainer.layers.star import STAR
from trainer.layers.stl import DNN, MaskNet
from trainer.layers.taml import TAML
from trainer.layers.wide import WideLogits
from trainer.objectives.base import AUX_KINDS, HIDDEN, LOGITS, REPS  # noqa: F401 (re-exported)

# Backbone name -> layer class, constructed as ``cls(tasks=..., **backbone_args)``. ESMM's own
# network is independent task MLPs over the shared embedding, i.e. DNN per task; its
# entire-space part is the ``ctcvr`` product head plus the ``esmm`` loss recipe.
BACKBONES: Dict[str, Callable[..., tf.keras.layers.Layer]] = {
    "dnn": DNN, "masknet": MaskNet, "shared_bottom": SharedBottom, "omoe": OMoE,
    "mmoe": MMoE, "cgc": CGC, "ple": PLE, "cross_stitch": CrossStitch, "esmm": DNN,
    "aitm": AITM, "man": MAN, "star": STAR, "taml": TAML, "autoheri": AutoHERI, "dcn": DCN,
}
# Backbones whose output already went through task towers: only the logit is added.
OWNS_TOWERS = frozenset({"aitm", "cross_stitch", "star", "taml", "autoheri"})
# Backbones whose maths is the click -> conversion funnel itself.
FUNNEL_ONLY = frozenset({"esmm", "aitm"})


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """What the network needs to know about its inputs.

    Attributes:
      vocab_sizes: Sparse feature (raw key) -> embedding rows, OOV buckets included.
      dense_keys: Dense features (raw keys).
      num_actions: Conversion actions with a label column (per-action heads need them).
    """

    vocab_sizes: Mapping[str, int]
    dense_keys: tuple
    num_actions: int = 0

    @property
    def input_names(self):
        return tuple(features.transformed_name(k) for k in self.vocab_sizes) + tuple(
            features.transformed_name(k) for k in self.dense_keys)


@dataclasses.dataclass(frozen=True)
class Networks:
    """The inference network and the network the training step runs (same layers).

    Attributes:
      inference: ``{<key>_xf}`` -> ``{head: [B]}``; exported.
      training: ``inference`` itself, or a model over the same layers whose outputs also hold
        the requested auxiliary outputs (``"_reps"``: ``{task: [B, d]}`` backbone outputs,
        ``"_hidden"``: ``{task: [h_0, ...]}`` tower activations, ``"_logits"``:
        ``{task: [B]}``), and, with HKE, the merged (training) per-action heads and the extra
        input ``adm_original`` ``[B, N]``.
    """

    inference: tf.keras.Model
    training: tf.keras.Model

    @property
    def extra_inputs(self) -> Tuple[str, ...]:
        """Inputs of the training network that the inference network does not have."""
        return tuple(n for n in self.training.input_names
                     if n not in self.inference.input_names)


ACTIONS = tasks_lib.ACTIONS
HKE_INPUT = "adm_original"


def backbone_tasks(cfg: ModelConfig, info: FeatureInfo) -> List[str]:
    """The backbone's tasks: ``model.tasks`` with ``actions`` expanded to ``cvr_<j>``."""
    if cfg.tasks is None:
        raise ConfigError("model.tasks is not resolved: build the config with "
                          "schemas.config.from_dict / load")
    if ACTIONS not in cfg.tasks:
        return list(cfg.tasks)
    if info.num_actions < 1:
        raise ConfigError("model.tasks [ctr, actions] needs per-action labels; the dataset "
                          "has none")
    return [tasks_lib.CTR] + [tasks_lib.action_head(j) for j in range(info.num_actions)]


def deep_features(cfg: ModelConfig, info: FeatureInfo) -> Tuple[Dict[str, int], List[str]]:
    """The sparse features (with their vocabulary sizes) and dense features the deep part
    reads: all but ``model.deep_exclude`` and the sparse ones with more rows than
    ``model.deep_max_vocabulary``.

    Raises:
      ConfigError: Nothing left for the deep part.
    """
    limit = cfg.deep_max_vocabulary
    sparse = {k: v for k, v in info.vocab_sizes.items()
              if k not in cfg.deep_exclude and (limit is None or v <= limit)}
    dense = [k for k in info.dense_keys if k not in cfg.deep_exclude]
    if not sparse and not dense:
        raise ConfigError(
            f"model.deep_exclude / deep_max_vocabulary leave no feature for the deep part "
            f"(deep_exclude {list(cfg.deep_exclude)}, deep_max_vocabulary {limit}; "
            f"vocabulary sizes {dict(info.vocab_sizes)}, dense {list(info.dense_keys)})")
    return sparse, dense


def _probability(logit, name: str):
    # Output layers are named after their head, so output_names == head names.
    # float32 from here on, also under a mixed_float16 policy: the losses need the precision.
    prob = tf.keras.layers.Activation("sigmoid", dtype="float32", name=f"{name}/sigmoid")(logit)
    return tf.keras.layers.Reshape((), dtype="float32", name=name)(prob)


def build_network(cfg: ModelConfig, info: FeatureInfo, seed: int = 42,
                  funnel: bool = True) -> tf.keras.Model:
    """The functional inference network (see :func:`build_networks`)."""
    return build_networks(cfg, info, seed, funnel=funnel).inference


def build_networks(cfg: ModelConfig, info: FeatureInfo, seed: int = 42,
                   aux: Sequence[str] = (), funnel: bool = True) -> Networks:
    """Builds the functional inference network (and an auxiliary training view of it).

    Args:
      cfg: Model section of the experiment config.
      info: Vocabulary sizes, dense feature names and number of conversion actions.
      seed: Seed of the weight initialisation.
      aux: Auxiliary training outputs to expose, some of :data:`AUX_KINDS` (``True`` for
        ``reps`` and ``hidden``, as AdaFTR needs).
      funnel: The tasks are the click -> conversion funnel (a funnel recipe): add the derived
        ``ctcvr`` (or ``cvr``) head. Otherwise every task is an independent head.

    Returns:
      :class:`Networks`; ``inference`` maps ``{<key>_xf: [B, 1]}`` to ``{head: [B]}``
      probabilities.

    Raises:
      ConfigError: Unknown backbone or task form, bad backbone arguments, ``hidden`` with a
        backbone that owns its towers (their layers are not exposed), or per-action heads
        without action labels.
    """
    aux = ("reps", "hidden") if aux is True else tuple(aux or ())
    unknown = sorted(set(aux) - set(AUX_KINDS))
    if unknown:
        raise ValueError(f"build_networks: unknown aux outputs {unknown}; expected some of "
                         f"{list(AUX_KINDS)}")
    tf.keras.utils.set_random_seed(seed)
    registry = BACKBONES
    if cfg.backbone not in registry:
        raise ConfigError(f"model.backbone: unknown backbone {cfg.backbone!r}; expected one of "
                          f"{sorted(registry)}")
    if not funnel and cfg.backbone in FUNNEL_ONLY:
        raise ConfigError(f"model.backbone {cfg.backbone!r} models the click -> conversion "
                          f"funnel (ctcvr = ctr x cvr); it needs a funnel recipe with tasks ctr "
                          f"and cvr, got tasks {list(cfg.tasks)} with independent BCE. Use one "
                          f"of {sorted(set(BACKBONES) - FUNNEL_ONLY)}")
    tasks = backbone_tasks(cfg, info)
    inputs = {}
    for key in info.vocab_sizes:
        name = features.transformed_name(key)
        inputs[name] = tf.keras.Input(shape=(1,), dtype=tf.int64, name=name)
    for key in info.dense_keys:
        name = features.transformed_name(key)
        inputs[name] = tf.keras.Input(shape=(1,), dtype=tf.float32, name=name)
    batch_l2 = cfg.embedding_l2_mode == "batch"
    deep_sparse, deep_dense = deep_features(cfg, info)
    embed = FeatureEmbedding(
        {features.transformed_name(k): v for k, v in deep_sparse.items()},
        [features.transformed_name(k) for k in deep_dense],
        embedding_dim=cfg.embedding_dim,
        embeddings_regularizer_l2=0.0 if batch_l2 else cfg.embedding_l2,
        l2_batch_rows=cfg.embedding_l2 if batch_l2 else 0.0, dropout=cfg.embedding_dropout,
        feature_dropout=cfg.embedding_feature_dropout, fused_tables=cfg.embedding_fused,
        name="embedding")
    x = embed({name: t for name, t in inputs.items()
               if name in embed.sparse_vocab_sizes or name in embed.dense_keys})
    wide = None
    if cfg.wide:  # Wide & Deep: a linear logit per task, added to the deep logit below
        wide = WideLogits(
            {features.transformed_name(k): v for k, v in info.vocab_sizes.items()},
            [features.transformed_name(k) for k in info.dense_keys], tasks=tasks,
            crosses=[[features.transformed_name(k) for k in pair] for pair in cfg.wide_crosses],
            cross_buckets=cfg.wide_cross_buckets, l2_batch_rows=cfg.wide_l2,
            name="wide")(inputs)
    if cfg.cross_layers:  # DCN-v2 cross layers under any backbone (model.cross_layers)
        x = CrossNetwork(cfg.cross_layers, projection_dim=cfg.cross_projection_dim,
                         name="cross")(x)
    try:
        backbone = registry[cfg.backbone](tasks=tasks, **dict(cfg.backbone_args),
                                          name="backbone")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.backbone_args for {cfg.backbone!r}: {e}") from e
    reps = backbone(x)
    has_towers = cfg.backbone not in OWNS_TOWERS and bool(cfg.tower_units)
    if "hidden" in aux and not has_towers:
        raise ConfigError(f"model: this loss reads task tower activations, but backbone "
                          f"{cfg.backbone!r} with tower_units={list(cfg.tower_units)} has no "
                          f"separate towers; use one of "
                          f"{sorted(set(BACKBONES) - OWNS_TOWERS)} with tower_units set")
    hke_input = (tf.keras.Input(shape=(info.num_actions,), dtype=tf.float32, name=HKE_INPUT)
                 if cfg.hke else None)
    outputs, trained, hidden, logits = {}, {}, {}, {}
    for task in tasks:
        h = reps[task]
        if hke_input is not None and task != tasks_lib.CTR:
            hke = HKE(list(cfg.hke_units), list(cfg.tower_units), cfg.tower_dropout,
                      name=f"{task}/hke")
            hke.build(h.shape)
            outputs[task] = _probability(hke.inference_logit(h), task)  # serving: M = 1
            column = tasks.index(task) - 1
            logits[task] = hke((h, hke_input[:, column]))  # training: eq. 10 with M
            trained[task] = _probability(logits[task], f"{task}/merged")
            continue
        if has_towers:
            h = MLP(list(cfg.tower_units), dropout=cfg.tower_dropout,
                    use_batch_norm=cfg.tower_batch_norm, return_hidden="hidden" in aux,
                    name=f"{task}/tower")(h)
            if "hidden" in aux:
                h, hidden[task] = h[0], list(h[1:])
        logits[task] = tf.keras.layers.Dense(1, name=f"{task}/logit")(h)
        if wide is not None:
            logits[task] = tf.keras.layers.Add(name=f"{task}/wide_deep")([logits[task],
                                                                          wide[task]])
        outputs[task] = trained[task] = _probability(logits[task], task)
    ctr, cvr, ctcvr = tasks_lib.CTR, tasks_lib.CVR, tasks_lib.CTCVR
    for heads in (outputs, trained) if funnel else ():
        if cvr in heads:
            heads[ctcvr] = ProductHead(dtype="float32", name=ctcvr)((heads[ctr], heads[cvr]))
        elif ctcvr in heads:
            heads[cvr] = RatioHead(dtype="float32", name=cvr)((heads[ctcvr], heads[ctr]))
    inference = tf.keras.Model(inputs=inputs, outputs=outputs, name="funnel_network")
    if not aux and hke_input is None:
        return Networks(inference, inference)
    extra = {}
    if "reps" in aux:
        extra[REPS] = {t: reps[t] for t in tasks}
    if "hidden" in aux:
        extra[HIDDEN] = hidden
    if "logits" in aux:
        extra[LOGITS] = {t: tf.keras.layers.Reshape((), name=f"{t}/logit_flat")(v)
                         for t, v in logits.items()}
    training_inputs = dict(inputs) if hke_input is None else {**inputs, HKE_INPUT: hke_input}
    training = tf.keras.Model(inputs=training_inputs, outputs={**trained, **extra},
                              name="funnel_training_network")
    return Networks(inference, training)
