"""The seed's XOR training, ported line by line from PySyft 0.2 to fedproto, in one script.

    python examples/xor_seed.py [--port 8777]

The data owner's part starts a worker on 127.0.0.1 in the background; the coordinator's part sends it a
train config, asks it to fit ten times, prints the loss of each fit and the trained model's predictions,
and the worker is stopped at the end. The comment above each fedproto line is the PySyft line it replaces.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import warnings

import torch as th
import torch.nn.functional as F
from torch import nn

import fedproto

# torch marks torch.jit as deprecated; TorchScript is still the format models travel in.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)

TOKEN = "s3cret"

# -- the data owner ---------------------------------------------------------------------------------------


def data_owner() -> fedproto.Worker:
    # hook = sy.TorchHook(th)                                  (no hook: fedproto does not patch torch)
    # data = th.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], requires_grad=True)
    data = th.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])  # gradients are the worker's business
    # target = th.tensor([[1.0], [1.0], [0.0], [0.0]], requires_grad=False)
    target = th.tensor([[1.0], [1.0], [0.0], [0.0]])
    # worker = WebsocketServerWorker(id="alice", host="0.0.0.0", port=8777, hook=hook)
    worker = fedproto.Worker(id="alice", tokens={"coordinator": TOKEN})
    # dataset = sy.BaseDataset(data, target)
    dataset = (data, target)
    # worker.add_dataset(dataset, key="xor")
    worker.add_dataset(dataset, key="xor")
    return worker


class BackgroundWorker:
    """``worker.start()`` of the seed, but on a thread of its own so that this script can go on."""

    def __init__(self, worker: fedproto.Worker, port: int) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="xor-worker", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(worker.start("127.0.0.1", port), self.loop).result(30)
        except BaseException:
            self._close_loop()
            raise

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.worker.stop(), self.loop).result(30)
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        if not self._thread.is_alive():
            self.loop.close()


# -- the coordinator ------------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 20)
        self.fc2 = nn.Linear(20, 10)
        self.fc3 = nn.Linear(10, 1)

    def forward(self, x: th.Tensor) -> th.Tensor:
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


# @th.jit.script
# def loss_fn(target, pred):
#     return ((target.view(pred.shape).float() - pred.float()) ** 2).mean()
@th.jit.script
def loss_fn(pred: th.Tensor, target: th.Tensor) -> th.Tensor:  # fedproto calls loss(output, target)
    return ((target.view(pred.shape).float() - pred.float()) ** 2).mean()


def coordinator(url: str) -> None:
    th.manual_seed(1)  # (not in the seed: makes the printed numbers repeatable)
    # model = Net()
    model = Net()
    # mock_data = th.zeros(1, 2)
    mock_data = th.zeros(1, 2)
    # traced_model = th.jit.trace(model, mock_data)
    traced_model = th.jit.trace(model, mock_data)  # optional: TrainConfig(model=model) scripts it for you

    # optimizer = "SGD"
    optimizer = "SGD"
    # batch_size = 4
    batch_size = 4
    # optimizer_args = {"lr" : 0.1, "weight_decay" : 0.01}
    optimizer_args = {"lr": 0.1, "weight_decay": 0.01}
    # epochs = 1
    epochs = 1
    # max_nr_batches = -1
    max_nr_batches = -1
    # shuffle = True
    shuffle = True

    # train_config = sy.TrainConfig(model=traced_model, loss_fn=loss_fn, optimizer=optimizer,
    #                               batch_size=batch_size, optimizer_args=optimizer_args, epochs=epochs,
    #                               shuffle=shuffle)
    train_config = fedproto.TrainConfig(
        model=traced_model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        batch_size=batch_size,
        optimizer_args=optimizer_args,
        epochs=epochs,
        shuffle=shuffle,
        max_nr_batches=max_nr_batches,
    )

    # kwargs_websocket = {"host": "localhost", "hook": hook, "verbose": False}
    # alice = WebsocketClientWorker(id="alice", port=8777, **kwargs_websocket)
    with fedproto.Client(url, token=TOKEN) as alice:
        # train_config.send(alice)
        train_config.send(alice)

        # for epoch in range(10):
        for epoch in range(10):
            # loss = alice.fit(dataset_key="xor")  # ask alice to train using "xor" dataset
            loss = alice.fit(dataset_key="xor", progress=False).final_loss
            # print("-" * 50)
            print("-" * 50)
            # print("Iteration %s: alice's loss: %s" % (epoch, loss))
            print(f"Iteration {epoch}: alice's loss: {loss:.6f}")

        # new_model = train_config.model_ptr.get()
        new_model = Net()
        new_model.load_state_dict(alice.get_model_weights())

        # The seed evaluated on its own copy of the data; here alice evaluates on hers.
        result = alice.evaluate("xor")
        print(f"\nEvaluation on alice: loss {result.loss:.6f} over {result.total} samples")

    data = th.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    target = th.tensor([[1.0], [1.0], [0.0], [0.0]])
    # print("\nEvaluation after training:")
    print("\nEvaluation after training:")
    with th.no_grad():
        # pred = model(data); loss = loss_fn(target=target, pred=pred)
        pred = model(data)
        loss = loss_fn(pred, target)
        # print("Loss before training: {}".format(loss)); print("Target: {}".format(target))
        print(f"Loss before training: {loss.item():.6f}")
        print(f"Target: {target.flatten().tolist()}")
        # new_pred = new_model.obj(data); loss = loss_fn(target=target, pred=new_pred)
        new_pred = new_model(data)
        loss = loss_fn(new_pred, target)
        print(f"Prediction: {[round(p, 4) for p in new_pred.flatten().tolist()]}")
        print(f"Final loss: {loss.item():.6f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8777, help="the worker's port (0 picks a free one)")
    args = parser.parse_args()

    # worker.start()
    background = BackgroundWorker(data_owner(), args.port)
    try:
        coordinator(background.worker.url)
    finally:
        background.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
