"""The course around the model: instant-feedback checks, exercise authoring and grading.

Needs the `course` extra (`pip install bertlab[course]`). `import bertlab` and the `bertlab
pretrain` / `finetune` commands import nothing from here.

    checks       one Exercise per exercise, by chapter: `checks.attention(my_attention)`
    authoring    exercises/ from solutions/: stubs for solution regions, hidden tests removed
    grading      `bertlab grade`: each submission in a sandboxed kernel, scored into a gradebook
"""
