"""lore-serve: a personalized reward model over HTTP (needs ``lore-train[serve]``).

    from lore_train import PersonalReward
    from lore_train.serve import create_app, ServerThread

    reward = PersonalReward.from_pretrained("exported/")
    with ServerThread(create_app(reward, store="users.db")) as url:
        ...  # POST url + "/v1/score", "/get_reward", "/v1/users/{id}/comparisons", ...

Modules, one job each: ``limits`` (the limits record), ``schema`` (request
bodies -> checked values), ``auth`` (bearer tokens and their user scopes),
``store`` (SQLite: users and their answers), ``batching`` (one backbone
forward for many requests), ``service`` (what each endpoint does), ``metrics``
(Prometheus), ``page`` (the elicitation page at ``/``), ``app`` (the routes),
``server`` (uvicorn on a bound socket) and ``cli`` (the ``lore-serve`` command).
"""

from .app import create_app
from .auth import Scope, TokenTable
from .limits import ServeLimits
from .page import Question, load_questions
from .server import ServerThread

__all__ = ["Question", "Scope", "ServeLimits", "ServerThread", "TokenTable", "create_app",
           "load_questions"]
