"""The endpoint usd-render.kit calls for each task (task_function = "render.run")."""


def run(stage: str = "", output: str = "") -> dict[str, str]:
    return {"stage": stage, "output": output}
