"""The registered pyfunc, logged as code ("models from code"): no pickle in the model.

MLflow copies this file into the model and runs it at load time; the fitted
scikit-learn pipeline is a skops file among the model's artifacts, loaded trusting
only the types listed in the model config. Self-contained on purpose (numpy,
pandas, scikit-learn, skops, mlflow): a serving cluster needs no fraudlake code.

``predict`` returns one ``fraud_score`` per row, higher = more suspicious. The flag
threshold chosen on validation data is in the model config and metadata
(``flag_threshold``); ``mlflow.pyfunc.spark_udf`` serves the score as a double.
"""

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class FraudScoreModel(PythonModel):
    def load_context(self, context):
        import skops.io as sio

        config = context.model_config
        self.pipeline = sio.load(context.artifacts["pipeline"], trusted=list(config["skops_trusted_types"]))
        self.score_kind = config["score_kind"]
        self.input_columns = list(config["input_columns"])
        self.flag_threshold = float(config["flag_threshold"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        frame = pd.DataFrame(model_input).copy()
        # Optional inputs (nullable columns) may be left out by a caller: they are missing values.
        for column in self.input_columns:
            if column not in frame.columns:
                frame[column] = None
        frame = frame[self.input_columns]
        if self.score_kind == "anomaly_score":
            scores = -self.pipeline.score_samples(frame)
        else:
            scores = self.pipeline.predict_proba(frame)[:, 1]
        return np.asarray(scores, dtype="float64")


set_model(FraudScoreModel())
