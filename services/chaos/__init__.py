"""``wsched chaos``: a soak that kills the scheduler, Kafka and TiDB and counts every task.

``plan`` draws the faults from a seed (pure, so a seed replays the same schedule);
``cluster`` starts and kills the processes; ``submitter`` is the client process that
submits through both API processes; ``audit`` reads the system of record and says what
was lost; ``soak`` runs the whole thing.
"""
