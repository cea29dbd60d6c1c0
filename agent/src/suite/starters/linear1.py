"""Starter solution: least-squares line on one hand-picked feature.

Standard library only. Each target is predicted as a + b * feature(row), fitted on the training set. Most of the
available information is ignored, so there is plenty of room to improve.
"""
import csv

# CONFIG


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx if sxx > 0 else 0.0
    return my - b * mx, b


train = read(TRAIN)
test = read(TEST)
xs = [feature(r) for r in train]
models = {t: fit(xs, [float(r[t]) for r in train]) for t in TARGETS}

with open("submission.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([ID] + TARGETS)
    for row in test:
        x = feature(row)
        w.writerow([row[ID]] + [postprocess(a + b * x) for a, b in (models[t] for t in TARGETS)])
print("wrote submission.csv for", len(test), "rows")
