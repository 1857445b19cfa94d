"""Export tooling for unigrpo model packages (offline; needs PyTorch, see requirements-export.txt)."""
