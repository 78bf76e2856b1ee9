"""What a run needs around the math: checkpoints, distributed training, speed options,
weight averaging and TensorBoard logs. It may import data, models, the kernel and the
foundation modules.
"""
