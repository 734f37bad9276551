"""Training for dense task types (detection, segmentation): data sets, fitting a dense head
on the frozen trunk's cached spatial maps, COCO mAP / IoU metrics, export."""
