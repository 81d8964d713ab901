"""The "Examples:" epilog of each command's --help (``\\b`` keeps click from re-wrapping them)."""

SEARCH = """Examples:

\b
  popcli search                                        # the quick start: Fashion-MNIST, CPU, ~1-2 minutes
  popcli search cifar10-conv4 --data-dir ~/data        # a packaged recipe by name (popcli recipes)
  popcli search --set search.density=0.3 --set model.init=kaiming_normal --out runs/d03
  popcli search cifar10-conv4 --show-recipe            # every key, its type, range and default
  popcli search --resume --out runs/d03                # continue after Ctrl-C
  popcli search --json -q | jq .test_acc
"""

EXPORT = """Examples:

\b
  popcli export runs/d03 -o d03.safetensors                 # seed + bit-packed masks, verified
  popcli export d03.safetensors --onnx d03.onnx --int8      # verified ONNX (+ int8) from an artifact
  popcli export runs/d03 -o d03.safetensors --onnx d03.onnx --prune-dead-units
"""

INSPECT = """Examples:

\b
  popcli inspect d03.safetensors
  popcli inspect d03.safetensors --json | jq .layers
"""

EVAL = """Examples:

\b
  popcli eval d03.safetensors --batch-sizes 1,64
  popcli eval d03.onnx --threads 1 --limit 1000
  popcli eval d03.safetensors --int8 --json
"""

MODELS = """Examples:

\b
  popcli models
  popcli models 'tv_*'                                 # torchvision's models (quote the pattern)
  popcli search --set model.arch=resnet18 --set data.dataset=cifar10
"""
