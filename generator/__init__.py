"""The generator: torch and transformers, the engine and the process that runs it; never imports bot."""

import logging

# transformers imports torchao (the library of --quantize) whenever it is installed. On import torchao warns that
# its CUDA extensions do not load in a CPU build of torch, and torch that torchao registers enums the old way:
# nothing this project uses, and it would be the first lines of every command's output.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
