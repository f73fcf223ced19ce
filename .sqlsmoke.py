import sys
from gristmill.conformance.cases import load_cases
from gristmill.conformance.runner import default_cases_dir, language_case_files, run_cases
from gristmill.config import load_config
from gristmill.server import BackgroundServer
from tests.conftest import sandbox_work_dir
cases=[c for c in load_cases(default_cases_dir(), language_case_files()) if c.language=="sql" and (len(sys.argv)<3 or sys.argv[2] in c.name)]
with sandbox_work_dir() as wd:
    cfg=load_config(overrides={"address":"127.0.0.1:0","work_dir":wd,"sandbox_backend":sys.argv[1]})
    with BackgroundServer(cfg) as addr:
        for r in run_cases(addr, cases, parallelism=2):
            o=r.outcome
            print('OK ' if not r.problems else 'BAD', r.case.name, o.verdict if o is not None else None, r.problems, (o.result_json[:200], o.error.name, o.error.message[:200], [f.line for f in o.error.stack]) if r.problems and o is not None else '')
