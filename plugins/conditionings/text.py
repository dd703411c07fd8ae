"""``text``: a prompt per sample; the null conditioning of CFG is the teacher family's own (SD: "").

Config: none.
"""

from __future__ import annotations

from flashbench import hookimpl


class TextConditioning:
    def prepare(self, teacher, prompts, extras=None):
        return teacher.encode_prompts(list(prompts), extras), teacher.null_condition(list(prompts), extras)


def build(config):
    return TextConditioning()


@hookimpl
def register_conditionings(register):
    register("text", build, description="text prompt; CFG null = the family's null conditioning")
