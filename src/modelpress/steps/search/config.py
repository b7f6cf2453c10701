from pydantic import Field, model_validator

from modelpress.contract.schema import StepConfig
from modelpress.contract.search import SearchSpec


class SearchConfig(StepConfig):
    search: SearchSpec
    rung: str = Field(..., description="the rung of search.ladder this task opens: it runs only if no earlier rung met the target")

    @model_validator(mode="after")
    def _rung_of_the_ladder(self) -> "SearchConfig":
        names = [rung.name for rung in self.search.ladder]
        if self.rung not in names:
            raise ValueError(f"rung '{self.rung}' is not in search.ladder ({', '.join(names)})")
        return self
