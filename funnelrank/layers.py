"""The project's Keras layers, for use in your own Keras model.

``from funnelrank import layers`` gives the multi-task backbones and building blocks the
pipeline assembles from config (implementation: ``trainer/layers/``), every one a Keras layer
with ``get_config`` and registered under the package name ``funnelrank`` (serialised as
``funnelrank>MMoE`` ...). Multi-task layers take ``tasks`` and return a dict keyed by task.

* Backbones: :class:`SharedBottom`, :class:`OMoE`, :class:`MMoE`, :class:`CGC`, :class:`PLE`
  (Tang et al. RecSys'20), :class:`CrossStitch`, :class:`AITM` (Xi et al. KDD'21), :class:`MAN`
  (multi-task attention network, with :class:`TaskAttention` between towers), :class:`DCN`
  (DCN-v2, Wang et al. WWW'21, on TensorFlow Recommenders' cross layer); single-task
  :class:`DNN` and :class:`MaskNet`.
* Building blocks: :class:`FeatureEmbedding` (sparse ids + dense features -> one vector),
  :class:`WideLogits` (Wide & Deep's per-task linear logits over ids, id crosses, dense),
  :class:`MLP`, :class:`SoftmaxGate`, :class:`CGC`'s levels, :class:`CrossStitchUnit`,
  :class:`AITModule`, :class:`MaskBlock`, :class:`CrossNetwork` (DCN-v2 cross layers,
  :class:`Cross`).
* Method parts: :class:`HKE` (KAML's hierarchical knowledge extraction, eq. 9-10),
  :class:`RelatednessNet` and :class:`LearnableTemperature` (AdaFTR eq. 8-9, 12; training-only),
  :class:`ProductHead` (ESMM's pCTCVR = pCTR x pCVR) and :class:`RatioHead`.

:func:`custom_objects` returns every registered layer and loss, for
``tf.keras.models.load_model(path, custom_objects=layers.custom_objects())``. The losses are in
``funnelrank.losses``. Importing this module imports TensorFlow (``import funnelrank`` alone
does not).
"""
from trainer.layers.aitm import AITM, AITModule
from trainer.layers.common import registered_objects
from trainer.layers.cross_stitch import CrossStitch, CrossStitchUnit
from trainer.layers.dcn import DCN, Cross, CrossNetwork
from trainer.layers.embedding import FeatureEmbedding
from trainer.layers.gates import SoftmaxGate
from trainer.layers.hke import HKE
from trainer.layers.man import MAN, TaskAttention
from trainer.layers.mlp import MLP
from trainer.layers.mmoe import MMoE
from trainer.layers.omoe import OMoE
from trainer.layers.ple import CGC, PLE
from trainer.layers.relatedness import LearnableTemperature, RelatednessNet
from trainer.layers.shared_bottom import SharedBottom
from trainer.layers.stl import DNN, MaskBlock, MaskNet
from trainer.layers.wide import WideLogits
from trainer.model import ProductHead, RatioHead

__all__ = ["AITM", "AITModule", "CGC", "Cross", "CrossNetwork", "CrossStitch",
           "CrossStitchUnit", "DCN", "DNN",
           "FeatureEmbedding", "HKE", "LearnableTemperature", "MAN", "MLP", "MMoE", "MaskBlock",
           "MaskNet", "OMoE", "PLE", "ProductHead", "RatioHead", "RelatednessNet",
           "SharedBottom", "SoftmaxGate", "TaskAttention", "WideLogits", "custom_objects"]


def custom_objects() -> dict:
    """Every registered layer AND loss of the project, by registered name (``funnelrank>MMoE``)
    and by class name: the ``custom_objects`` of ``tf.keras.models.load_model``."""
    import funnelrank.losses  # noqa: F401  (registers the loss classes)

    return registered_objects()
