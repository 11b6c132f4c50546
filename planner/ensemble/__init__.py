"""tune-weights: combine a run's held-out predictions with weights that honestly beat a plain average.

``preds`` loads and checks the prediction files, ``objectives`` scores a mix, ``methods`` and
``study`` fit weights, ``crossfit`` scores every method on folds it was not fit on, ``submission``
writes the CSV, ``report`` draws the table and the PNG, and ``tune`` runs them in order.
"""
