"""Write the format-version-1 golden artifacts. Run once at commit cbfb00a (the last v1 writer):
`PYTHONPATH=. python tests/golden/make_v1.py tests/golden`. Later writers cannot reproduce them;
tests/test_artifact_schema.py checks that this popcli still reads them exactly."""
import sys, torch
import popcli
from popcli import recipe as recipes
from popcli.models import build_model
out = sys.argv[1]
cases = {
 "v1_fc_bn_rans": (["model.arch=fc", "model.hidden=[32]", "model.batchnorm=true", "data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "seed=9007199254740993", "search.density=0.1", "model.init=scaled_kaiming_normal"], "rans"),
 "v1_conv2_packbits": (["model.arch=conv2", "model.width=0.0625", "data.dataset=synthetic", "data.shape=[3,8,8]", "data.num_classes=3", "search.dense_last=true", "seed=5", "search.density=0.3"], "packbits"),
 "v1_fc_dense": (["model.arch=fc", "model.hidden=[8]", "data.dataset=synthetic", "data.shape=[1,4,4]", "data.num_classes=2", "search.method=dense", "seed=3"], "auto"),
}
for name, (opts, codec) in cases.items():
    r = recipes.load(None, opts)
    m = build_model(r.model, r.search, in_channels=r.data.shape[0], image_size=r.data.shape[1], num_classes=r.data.num_classes, seed=r.seed)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d) or isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
                mod.num_batches_tracked.fill_(7)
            if hasattr(mod, "scores"):
                mod.scores.copy_(torch.randn(mod.scores.shape, generator=g))
            elif isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) and r.search.method == "dense" or (isinstance(mod, (torch.nn.Linear,)) and not hasattr(mod, "scores")):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g))
    art = popcli.save(m, f"{out}/{name}.safetensors", recipe=r, data_info={"shape": r.data.shape, "num_classes": r.data.num_classes}, metrics={"test_acc": 0.5, "steps": 3}, codec=codec)
    print(name, art.codec, art.file_bytes)
