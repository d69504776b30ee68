"""User-facing errors: one clear line naming the field, the bad value and what is allowed."""


class GptlabError(Exception):
    """Bad input from a user (config, data, file); the CLI prints it as one line and exits 2."""


def choice_error(field: str, value: object, allowed: list[str]) -> GptlabError:
    """The error for a value that is not one of a fixed set of choices."""
    return GptlabError(f"{field} = {value!r} is not allowed; choose one of: {', '.join(allowed)}")
