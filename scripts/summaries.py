"""Reads the JSON summaries `ringup bench --json` prints, one after another
in a file, for the bench scripts."""

import json


def read(path):
    """Every summary in the file at `path`, in order."""
    text, rows, i = open(path).read(), [], 0
    decoder = json.JSONDecoder()
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        row, i = decoder.raw_decode(text, i)
        rows.append(row)
    return rows
