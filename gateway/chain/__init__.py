"""On-chain anchoring of the log's checkpoints on the AnchorRegistry contract.

* :mod:`~gateway.chain.backends`: where the chain is (``embedded`` py-evm, a managed
  ``anvil`` node with persistent state, or any JSON-RPC ``rpc`` endpoint).
* :mod:`~gateway.chain.contract`: the registry's artifact, calls and ``Anchored`` events;
  :func:`stream_id` names a stream on chain.
* :mod:`~gateway.chain.deployment`: finding or (dev chains) deploying the registry.
* :mod:`~gateway.chain.nonces`: one nonce manager per anchoring account.
* :mod:`~gateway.chain.worker`: the :class:`AnchorWorker` that anchors, follows, replaces,
  re-sends and reconciles; :mod:`~gateway.chain.models` its policy and reports;
  :mod:`~gateway.chain.records` the anchors and transactions it stores.
* :mod:`~gateway.chain.status`: the backlog, from the database alone.

The package itself imports nothing: reading the backlog (``dsgw status``) or the stored
anchors must not load web3 and the EVM.
"""
