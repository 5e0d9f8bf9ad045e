"""tvc: version control, a model registry and model serving for large AI models.

>>> import tvc
>>> reg = tvc.Registry.init("work")                      # doctest: +SKIP
>>> reg.commit("bert", ["./out"], "baseline", params={"lr": 3e-5})  # doctest: +SKIP
>>> reg.open("bert@v1").tensor("classifier.weight")     # doctest: +SKIP
"""

from tvc import errors
from tvc.api import Registry
from tvc.registry import CommitResult, Version, VersionReader

__version__ = "0.1.0"
__all__ = ["CommitResult", "Registry", "Version", "VersionReader", "__version__", "errors"]
