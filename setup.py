"""Install densenas; `decoders/`, `tasks/` and `datasets/` live at the top level of the repository but
install under the ``densenas.`` namespace so they never clash with e.g. HuggingFace ``datasets``."""
from setuptools import find_packages, setup

_TOP = ("decoders", "tasks", "datasets")
packages = find_packages(include=["densenas", "densenas.*"])
package_dir = {"densenas": "densenas"}
for top in _TOP:
    sub = find_packages(where=".", include=[top, f"{top}.*"])
    packages += [f"densenas.{p}" for p in sub]
    package_dir[f"densenas.{top}"] = top

setup(
    name="densenas",
    version="0.1.0",
    description="Neural architecture search for dense prediction inside the OpenMMLab ecosystem",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    install_requires=[
        "torch==2.14.1", "torchvision==0.29.1", "mmengine==0.10.7", "mmcv==2.1.0",
        "mmdet==3.3.0", "mmsegmentation==1.2.2", "pycocotools", "scikit-image", "rich", "matplotlib",
    ],
)
