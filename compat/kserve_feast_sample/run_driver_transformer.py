"""Starts KServe's Feast sample transformer (driver_transformer/driver_transformer.py, unchanged)
as the sample's own `python -m driver_transformer` would, with the same flags.

Why not the sample's __main__.py itself: it declares --model_name, --predictor_host and
--protocol on a parser whose parent, kserve.model_server.parser, declares them too since KServe
0.12 (kserve/kserve#3332), so with any KServe that has `kserve.logging` (0.13+, which the sample
imports) it stops with "argparse.ArgumentError: argument --predictor_host: conflicting option
string". It also never calls `load()`, and KServe's model server refuses to start with no model ready.
This launcher reads those three flags from KServe's parser, declares only the sample's own (with
the sample's help), and marks the transformer ready.
"""

import argparse

import kserve
from kserve import logging

from driver_transformer.driver_transformer import DriverTransformer

parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
parser.add_argument(
    "--feast_serving_url",
    type=str,
    help="The url of the Feast feature server.",
    required=True,
)
parser.add_argument(
    "--entity_id_name",
    type=str,
    help="Entity id name to use as keys in the feature store.",
    required=True,
)
parser.add_argument(
    "--feature_refs",
    type=str,
    nargs="+",
    help="A list of features to retrieve from the feature store.",
    required=True,
)
args, _ = parser.parse_known_args()

if __name__ == "__main__":
    if args.configure_logging:
        logging.configure_logging(args.log_config_file)
    transformer = DriverTransformer(
        name=args.model_name,
        predictor_host=args.predictor_host,
        protocol=args.protocol,
        feast_serving_url=args.feast_serving_url,
        entity_id_name=args.entity_id_name,
        feature_refs=args.feature_refs,
    )
    # kserve.Model.load() only marks it ready; KServe's model server refuses to start with no
    # model ready (NoModelReady), and the sample's __main__.py never calls it.
    transformer.load()
    server = kserve.ModelServer()
    server.start(models=[transformer])
