"""Install densenas; `decoders/`, `tasks/` and `datasets/` live at the top level of the repository but
install under the ``densenas.`` namespace so they never clash with e.g. HuggingFace ``datasets``."""
from pathlib import Path

from setuptools import find_packages, setup

_TOP = ("decoders", "tasks", "datasets")
packages = find_packages(include=["densenas", "densenas.*"])
package_dir = {"densenas": "densenas"}
for top in _TOP:
    sub = find_packages(where=".", include=[top, f"{top}.*"])
    packages += [f"densenas.{p}" for p in sub]
    package_dir[f"densenas.{top}"] = top

# the config bases each task's exporter copies next to the configs it writes (densenas/export.py)
package_data = {f"densenas.tasks.{t.name}": ["configs/_base_/*.py", "configs/_base_/*/*.py"]
                for t in Path("tasks").iterdir() if (t / "configs" / "_base_").is_dir()}

setup(
    name="densenas",
    version="0.1.0",
    description="Neural architecture search for dense prediction inside the OpenMMLab ecosystem",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data=package_data,
    # Plugins (densenas/plugins.py): the core finds tasks and search spaces by name through these groups;
    # another package adds its own by declaring entry points in the same groups.
    entry_points={
        "densenas.task_plugins": [
            "segmentation = densenas.tasks.segmentation.task:SegmentationTask",
            "detection = densenas.tasks.detection.task:DetectionTask",
            "restoration = densenas.tasks.restoration.task:RestorationTask",
            "depth = densenas.tasks.depth.task:DepthTask",
            "keypoints = densenas.tasks.keypoints.task:KeypointTask",
        ],
        "densenas.space_plugins": [
            "auxcell = densenas.decoders.auxcell:AuxCellSpace",
            "autodeeplab = densenas.decoders.autodeeplab:AutoDeepLabSpace",
            "irnas = densenas.decoders.irnas:IRNASSpace",
            "nasfcos = densenas.decoders.nasfcos:NASFCOSSpace",
            "nasfpn = densenas.decoders.nasfpn:NASFPNSpace",
            "template = densenas.decoders.template:TemplateSpace",
        ],
    },
    install_requires=[
        "torch==2.14.1", "torchvision==0.29.1", "mmengine==0.10.7", "mmcv==2.1.0",
        "mmdet==3.3.0", "mmsegmentation==1.2.2", "mmpose==1.3.2", "timm==1.0.15",
        # 2.0.9 / 2.0.10 raise KeyError: 'info' in COCO.loadRes on annotation files without "info"
        "pycocotools==2.0.11", "scikit-image", "scikit-learn==1.9.1", "scipy==1.17.1",
        "optuna==4.6.0", "rich", "matplotlib",
    ],
    # parallel: tools/search.py --workers N / --address (densenas/ray_executor.py); install.sh installs it
    extras_require={"test": ["pytest==8.3.5", "pytest-timeout==2.4.0", "hypothesis==6.155.2"],
                    "parallel": ["ray==2.60.0"]},
)
