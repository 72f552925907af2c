"""Errors that the CLI reports as one line with exit code 2 (user mistakes, not bugs)."""


class UserError(Exception):
    """A mistake in the user's input: a bad name, path, option or file.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback.
    """


class ImageSizeError(ValueError):
    """An image whose size one preprocessing step cannot handle (recorded per sample, never fatal).

    The message names the step, the image size (H x W) and what the step needs, e.g.
    ``"NPR input (crop to even size) cannot handle a 1x1 (HxW) image: it needs at least 2x2 pixels"``.
    """

    def __init__(self, step: str, size: tuple[int, int], need: str) -> None:
        self.step, self.size, self.need = step, (int(size[0]), int(size[1])), need
        super().__init__(f"{step} cannot handle a {self.size[0]}x{self.size[1]} (HxW) image: {need}")
