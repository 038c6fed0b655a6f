"""funnelrank: a TFX/Keras pipeline for multi-task CTR/CVR learning.

Loose ranges live here; the reproducible install is requirements/lock.txt (see Makefile).
"""
import glob
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    """Also copies the shipped experiment configs (``configs/*.yaml`` of the source tree) into
    the built package as ``funnelrank/configs/``, where ``schemas.config.shipped_configs_dir``
    finds them in an installed (wheel, Docker image) copy: ``--config mmoe`` then works from
    any directory. An editable install reads ``configs/`` of the source tree itself."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = os.path.dirname(os.path.abspath(__file__))
        target = os.path.join(self.build_lib, "funnelrank", "configs")
        self.mkpath(target)
        for path in sorted(glob.glob(os.path.join(here, "configs", "*.yaml"))):
            self.copy_file(path, os.path.join(target, os.path.basename(path)))


setup(
    name="funnelrank",
    version="0.1.0",
    description="TFX/Keras pipeline for multi-task CTR/CVR learning (PWiseR, AdaFTR, KAML, MAN)",
    python_requires=">=3.9,<3.11",
    packages=find_packages(include=["funnelrank", "funnelrank.*", "pipeline", "pipeline.*",
                                    "trainer", "trainer.*", "transform", "transform.*",
                                    "serving", "serving.*", "schemas", "schemas.*"]),
    cmdclass={"build_py": BuildPyWithConfigs},
    install_requires=[
        "tfx>=1.16,<1.17",
        "tensorflow>=2.16,<2.17",
        "tf-keras>=2.16,<2.17",
        "tensorflow-transform>=1.16,<1.17",
        "tensorflow-model-analysis>=0.47,<0.48",
        "tensorflow-recommenders>=0.7.3,<0.8",
        "tensorflow-serving-api>=2.16,<2.17",
        "apache-beam[dill]>=2.59",
        "kfp-pipeline-spec==0.2.2",
        "protobuf>=3.20.3,<4",
        "pyyaml>=6",
        "numpy<2",
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout", "hypothesis"]},
    entry_points={"console_scripts": ["funnelrank=funnelrank.cli:main"]},
)
