"""The project's Keras losses, for use in your own Keras model.

``from funnelrank import losses`` gives the paper methods' losses (implementation:
``trainer/losses/``), each a ``tf.keras.losses.Loss`` with ``get_config``, registered under the
package name ``funnelrank``, the paper's equation in its docstring; the loss recipes of the
pipeline use these same classes.

* :class:`PWiseR`: pairwise ranking of converted impressions above clicked-unconverted and
  unclicked ones (PWiseR eq. 2); ``y_true`` ``[B, 2]`` = (click, conversion), ``y_pred`` the
  pCTR or pCTCVR head.
* :class:`AdaptiveInfoNCE`: AdaFTR's inter-task InfoNCE with a per-row temperature (eq. 6/13);
  ``y_pred`` ``[B, 2d + 1]`` = h^ctr | h^cvr | tau (``y_true`` ignored).
* :class:`MaskedBCE` (KAML eq. 12), :class:`RLURanking` (eq. 11) and their combination
  :class:`KamlLoss` (eq. 13); ``y_true`` ``[B, 2N]`` = labels | ADM mask, ``y_pred`` ``[B, N]``
  logits.
* :class:`UncertaintyWeighting`: MAN's learned uncertainty weights of K task losses (eq. 3); a
  layer (it holds ``log_sigma``) that maps the task losses to the total, training-only by
  construction.

PWiseR and the KAML losses are batch-level: one scalar of the whole global batch (under a
distribution strategy every replica's rows are gathered), no ``sample_weight``.
:class:`AdaptiveInfoNCE` returns one term per row (its negatives from the global batch), reduced
by Keras: the batch mean by default, ``reduction="sum"`` for the paper's sum.

:func:`custom_objects` returns every registered layer and loss, for
``tf.keras.models.load_model``.
"""
from funnelrank.layers import custom_objects
from trainer.losses.contrastive import AdaptiveInfoNCE
from trainer.losses.kaml import KamlLoss, MaskedBCE, RLURanking
from trainer.losses.pwiser import PWiseR
from trainer.losses.uncertainty import UncertaintyWeighting

__all__ = ["AdaptiveInfoNCE", "KamlLoss", "MaskedBCE", "PWiseR", "RLURanking",
           "UncertaintyWeighting", "custom_objects"]
