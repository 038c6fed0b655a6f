"""AutoGraph leaves tf_keras's own code alone, as TensorFlow already does for ``keras``.

AutoGraph rewrites every Python function a ``tf.function`` calls unless its module is on
``tensorflow.python.autograph.core.config.CONVERSION_RULES``' do-not-convert list. TF 2.16's
list names ``keras`` but not ``tf_keras`` (the Keras 2 package that ``TF_USE_LEGACY_KERAS=1``
selects), so every trace of the train, test and predict functions transpiled tf_keras's layer
``__call__``, functional graph runner, metrics and losses: measured on a 200-row Ali-CCP run,
the first epoch took 24.6 s, 9 s of it in conversion, and the converted code traces slower
(docs/benchmarks.md, "Start-up").

With the rule, the code below tf_keras's ``train_function`` (our train step, recipes, layers
and losses) is traced as plain Python, as Keras 3 traces it: every layer and loss of this
project is written for graph mode (``tf.cond``/``tf.where``, no Python ``if`` on a tensor).
A custom layer whose ``call`` branches in Python on a tensor opts back in by decorating that
``call`` with ``tf.function`` (AutoGraph converts what a ``tf.function`` wraps).
"""
from __future__ import annotations

import logging

from tensorflow.python.autograph.core import config as autograph_config

log = logging.getLogger(__name__)

PACKAGE = "tf_keras"


def skip_tf_keras_conversion() -> bool:
    """Adds a do-not-convert rule for ``tf_keras`` to AutoGraph (once per process).

    Returns:
      True when this call added the rule, False when it was there already.
    """
    rules = tuple(autograph_config.CONVERSION_RULES)
    if any(isinstance(rule, autograph_config.DoNotConvert) and rule.matches(PACKAGE)
           for rule in rules):
        return False
    autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert(PACKAGE),) + rules
    log.debug("AutoGraph: added a do-not-convert rule for %s", PACKAGE)
    return True
