"""Runs in a worker started with multiprocessing's spawn (see test_pipeline)."""


def registered_models():
    from espnet2.tasks.asr import frontend_choices, model_choices

    return sorted(model_choices.classes), sorted(frontend_choices.classes)
