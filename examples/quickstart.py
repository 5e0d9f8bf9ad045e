"""The seed's example with tvc: init a registry, commit a README.md, clone it, read it back."""

from pathlib import Path

import tvc

reg = tvc.Registry.init("work")
Path("README.md").write_text("# my model\n")
reg.commit("demo", "README.md", "add readme")
copy = tvc.Registry.clone("work", "copy")
print(copy.open("demo@main").read("README.md"))
