"""trainer.tracing: AutoGraph leaves tf_keras alone, and still converts this project's code."""
import tensorflow as tf
from tensorflow.python.autograph.core import config as autograph_config
from tensorflow.python.autograph.impl import conversion

from trainer import tracing
from trainer.layers.mlp import MLP


def _without_tf_keras_rule(monkeypatch):
    rules = tuple(r for r in autograph_config.CONVERSION_RULES
                  if not (isinstance(r, autograph_config.DoNotConvert) and r.matches("tf_keras")))
    monkeypatch.setattr(autograph_config, "CONVERSION_RULES", rules)


def test_tf_keras_code_is_left_alone_once_and_only_once(monkeypatch):
    _without_tf_keras_rule(monkeypatch)
    dense_call = tf.keras.layers.Dense(1).call
    assert tf.keras.layers.Dense.__module__.startswith("tf_keras.")  # the legacy Keras runs
    assert not conversion.is_allowlisted(dense_call)  # TF 2.16 converts tf_keras's code

    assert tracing.skip_tf_keras_conversion() is True
    assert conversion.is_allowlisted(dense_call)
    assert tracing.skip_tf_keras_conversion() is False  # once per process
    assert sum(isinstance(r, autograph_config.DoNotConvert) and r.matches("tf_keras")
               for r in autograph_config.CONVERSION_RULES) == 1
    # The project's own layers are not on the list: a tf.function around them still converts.
    assert not conversion.is_allowlisted(MLP([4]).call)


def test_a_session_adds_the_rule_before_it_builds(monkeypatch):
    from tests import fixtures
    from trainer.session import TrainingSession

    _without_tf_keras_rule(monkeypatch)
    _, _, info = fixtures.tiny_arrays(200)
    TrainingSession(fixtures.tiny_config(), fixtures.TINY_SPEC, info,
                    tf.distribute.get_strategy())
    assert conversion.is_allowlisted(tf.keras.layers.Dense(1).call)


def test_building_a_model_adds_the_rule(monkeypatch):
    """The speed benchmarks build through ``build_model`` without a session: they trace as
    the product does."""
    from tests import fixtures
    from trainer.session import build_model

    _without_tf_keras_rule(monkeypatch)
    _, _, info = fixtures.tiny_arrays(200)
    build_model(fixtures.tiny_config(), info)
    assert conversion.is_allowlisted(tf.keras.layers.Dense(1).call)
