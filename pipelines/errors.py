"""Problems found before a build does any work (bad config, missing input, impossible
settings). The CLI prints them and exits 2; nothing is written."""


class BuildSetupError(ValueError):
    pass
