"""What the tests share: running a script (:func:`support.tools.run_script` in a process of its
own, :func:`support.tools.call_main` in this one), train_net.py's runs and results
(``support.train_net``), fixtures built once per run (``support.run_once``), the loop oracle of
the relation (``support.rse_loops``), and the two scripts the tests start: the fork server
(``support/fork_server.py``) and train_net.py killed at a chosen moment (``support/kill_at.py``).
"""
