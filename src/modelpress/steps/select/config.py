from modelpress.contract.schema import StepConfig
from modelpress.contract.search import SearchSpec


class SelectConfig(StepConfig):
    search: SearchSpec
